//! Group commit for the SQL stores: the Ub calls of concurrent bootstraps
//! ([`BsfStore::start_run`], [`BsfStore::take_run`], [`BsfStore::put_session`]) are queued to one
//! writer task, which takes whatever has queued up (at most [`MAX_BATCH`] calls) and serves it in
//! one transaction of a fixed number of statements — delete the taken challenges, read the
//! subscribers involved, then write the SQN updates, new challenges and sessions as multi-row
//! statements — and one commit (one fsync for SQLite). Every caller's answer is sent after the
//! commit, so "durable before the call returns" holds; if anything fails, the whole batch rolls
//! back and every caller gets the error.
//!
//! The decisions inside a batch ([`plan`]) are plain code over the rows read under the
//! transaction's write lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL `SELECT … FOR UPDATE` in IMPI
//! order), applied in arrival order: two runs of one IMPI in one batch get consecutive SQNs,
//! exactly as if they had been served one after the other.
//!
//! [`BsfStore::start_run`]: crate::bsf::BsfStore::start_run
//! [`BsfStore::take_run`]: crate::bsf::BsfStore::take_run
//! [`BsfStore::put_session`]: crate::bsf::BsfStore::put_session

use std::collections::HashMap;

use sqlx::{Arguments, Encode, Type};

use tokio::sync::{mpsc, oneshot};

use super::super::store::{GbaType, Pending, SqnAdvance, StoreError};

/// Most calls served by one transaction (bounds the statement parameters: 7 per session row,
/// well inside SQLite's 32 766 and PostgreSQL's 65 535).
pub(super) const MAX_BATCH: usize = 256;

/// Calls waiting for the writer; senders wait when it is full (back-pressure).
const QUEUE: usize = 4 * MAX_BATCH;

/// A subscriber row as stored: K and OPc still wrapped (the caller unwraps, off the writer task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SubscriberRow {
    pub impi: String,
    pub imsi: String,
    pub wrapped_k: Vec<u8>,
    pub wrapped_opc: Vec<u8>,
    pub sqn: u64,
    pub amf: Vec<u8>,
    pub gba_type: String,
}

/// A session row as stored: Ks wrapped by the caller before queueing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SessionRow {
    pub btid: String,
    pub impi: String,
    pub wrapped_ks: Vec<u8>,
    pub rand: [u8; 16],
    pub gba_type: GbaType,
    pub bootstrapped_at: u64,
    pub expires_at: u64,
}

/// One queued call, without its reply channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    Start { impi: String, advance: SqnAdvance, pending: Pending },
    Take { rand: [u8; 16] },
    Session(SessionRow),
}

/// What [`Request::Start`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StartAnswer {
    /// The row, its `sqn` advanced to the new vector's.
    Subscriber(SubscriberRow),
    Unknown,
    Exhausted,
}

/// The answer to one [`Request`], in the same position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    Start(StartAnswer),
    Take(Option<(Pending, Option<SubscriberRow>)>),
    Session,
}

/// The writes a batch makes after its reads, and the answers to send once they are committed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// (IMPI, new SQN_HE), one per IMPI.
    pub sqn: Vec<(String, u64)>,
    /// New pending challenges, one per RAND.
    pub pending: Vec<Pending>,
    /// Sessions to store, one per IMPI and per B-TID.
    pub sessions: Vec<SessionRow>,
    pub answers: Vec<Answer>,
}

/// The RANDs whose pending challenges the batch takes (distinct).
pub(super) fn take_keys(requests: &[Request]) -> Vec<[u8; 16]> {
    let mut keys: Vec<[u8; 16]> =
        requests.iter().filter_map(|r| if let Request::Take { rand } = r { Some(*rand) } else { None }).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The IMPIs of the runs the batch starts, sorted and distinct. The batch reads these
/// subscribers and those named by the challenges it takes, in IMPI order (PostgreSQL locks them
/// in that order, so two BSF instances cannot deadlock on them).
pub(super) fn start_impis(requests: &[Request]) -> Vec<&str> {
    let mut impis: Vec<&str> = requests
        .iter()
        .filter_map(|r| if let Request::Start { impi, .. } = r { Some(impi.as_str()) } else { None })
        .collect();
    impis.sort_unstable();
    impis.dedup();
    impis
}

/// Applies the requests in order to the rows read under the write lock.
pub(super) fn plan(requests: Vec<Request>, taken: Vec<Pending>, subscribers: Vec<SubscriberRow>) -> Plan {
    let mut taken: HashMap<[u8; 16], Pending> = taken.into_iter().map(|p| (p.rand, p)).collect();
    let mut rows: HashMap<String, SubscriberRow> = subscribers.into_iter().map(|s| (s.impi.clone(), s)).collect();
    let mut sqn: HashMap<String, u64> = HashMap::new();
    let mut pending: HashMap<[u8; 16], Pending> = HashMap::new();
    let mut sessions: Vec<SessionRow> = Vec::new();
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        answers.push(match request {
            Request::Start { impi, advance, pending: challenge } => match rows.get_mut(&impi) {
                None => {
                    pending.insert(challenge.rand, challenge);
                    Answer::Start(StartAnswer::Unknown)
                }
                Some(row) => match advance.apply(row.sqn) {
                    None => Answer::Start(StartAnswer::Exhausted),
                    Some(next) => {
                        row.sqn = next;
                        sqn.insert(impi, next);
                        pending.insert(challenge.rand, challenge);
                        Answer::Start(StartAnswer::Subscriber(row.clone()))
                    }
                },
            },
            Request::Take { rand } => {
                // A challenge started earlier in this batch is takeable too (its RAND is fresh).
                let found = taken.remove(&rand).or_else(|| pending.remove(&rand));
                Answer::Take(found.map(|p| {
                    let row = rows.get(&p.impi).cloned();
                    (p, row)
                }))
            }
            Request::Session(row) => {
                // A later session of the same IMPI, or with the same B-TID, replaces an earlier one.
                sessions.retain(|s| s.impi != row.impi && s.btid != row.btid);
                sessions.push(row);
                Answer::Session
            }
        });
    }
    let mut sqn: Vec<(String, u64)> = sqn.into_iter().collect();
    sqn.sort_unstable();
    let mut pending: Vec<Pending> = pending.into_values().collect();
    pending.sort_unstable_by_key(|p| p.rand);
    Plan { sqn, pending, sessions, answers }
}

/// The statements of one batch with their arguments. The placeholders come from the backend's
/// own [`Arguments::format_placeholder`] (`?` for SQLite, `$n` for PostgreSQL). With `combine`,
/// the statements go out as one multi-statement query (SQLite: one round trip to its worker
/// thread for the lot); without, one by one (PostgreSQL's extended protocol takes one statement
/// per query).
pub(super) struct Script<A> {
    combine: bool,
    done: Vec<(String, A)>,
    sql: String,
    args: A,
}

impl<A: Arguments> Script<A> {
    pub(super) fn new(combine: bool) -> Self {
        Script { combine, done: Vec::new(), sql: String::new(), args: A::default() }
    }

    /// Starts the next statement with this text.
    pub(super) fn statement(&mut self, text: &str) -> &mut Self {
        if !self.sql.is_empty() {
            if self.combine {
                self.sql.push_str("; ");
            } else {
                self.done.push((core::mem::take(&mut self.sql), core::mem::take(&mut self.args)));
            }
        }
        self.sql.push_str(text);
        self
    }

    /// Appends text to the current statement.
    pub(super) fn text(&mut self, text: &str) -> &mut Self {
        self.sql.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub(super) fn bind<'t, T>(&mut self, value: T) -> Result<&mut Self, StoreError>
    where
        T: Encode<'t, A::Database> + Type<A::Database>,
    {
        self.args.add(value).map_err(|e| StoreError::new(format!("bind: {e}")))?;
        self.args.format_placeholder(&mut self.sql).map_err(|e| StoreError::new(format!("placeholder: {e}")))?;
        Ok(self)
    }

    /// Appends `(v, v, …)`, each value bound.
    pub(super) fn list<'t, T, I>(&mut self, values: I) -> Result<&mut Self, StoreError>
    where
        I: IntoIterator<Item = T>,
        T: Encode<'t, A::Database> + Type<A::Database>,
    {
        self.sql.push('(');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(v)?;
        }
        self.sql.push(')');
        Ok(self)
    }

    /// The queries to run, in order.
    pub(super) fn finish(mut self) -> Vec<(String, A)> {
        if !self.sql.is_empty() {
            self.done.push((self.sql, self.args));
        }
        self.done
    }
}

/// One queued call with its reply channel.
struct Call {
    request: Request,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

impl core::fmt::Debug for Call {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

/// The writer's own database connection: how to open it and how to serve one batch on it.
pub(super) trait BatchConnection: Sized + 'static {
    /// What [`BatchConnection::connect`] needs.
    type Options: Send + 'static;

    /// Opens the connection (on the writer's thread).
    async fn connect(options: &Self::Options) -> Result<Self, StoreError>;

    /// Serves one batch in one transaction; one answer per request, in order.
    async fn execute(&mut self, requests: Vec<Request>) -> Result<Vec<Answer>, StoreError>;

    /// Work that runs beside the writer for as long as it lives (never returns when there is
    /// some; returns at once when there is none).
    async fn housekeeping(options: &Self::Options);
}

/// The handle the store's methods use to queue calls. Cloning shares the writer.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Call>,
}

fn stopped() -> StoreError {
    StoreError::new("the store's writer has stopped")
}

impl Writer {
    /// Starts the writer: a thread of its own (`bsf-store-writer`) with a single-threaded tokio
    /// runtime and its own connection, opened with `options` (re-opened after a failed batch).
    /// A thread of its own because the writer is the one serial step every bootstrap passes
    /// through: each of its statement round trips would otherwise wait in the service's run
    /// queue behind the HTTP work it is holding up. The thread ends when every [`Writer`] is
    /// dropped.
    ///
    /// # Errors
    /// When the thread or its runtime cannot be created.
    pub(super) fn start<C: BatchConnection>(options: C::Options) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::new(format!("store writer runtime: {e}")))?;
        let (queue, rx) = mpsc::channel::<Call>(QUEUE);
        std::thread::Builder::new()
            .name("bsf-store-writer".into())
            .spawn(move || {
                runtime.block_on(async {
                    let housekeeping = async {
                        C::housekeeping(&options).await;
                        core::future::pending::<()>().await;
                    };
                    tokio::select! {
                        () = serve::<C>(&options, rx) => {}
                        () = housekeeping => {}
                    }
                });
            })
            .map_err(|e| StoreError::new(format!("store writer thread: {e}")))?;
        Ok(Writer { queue })
    }

    /// Queues one request and waits for its committed answer.
    pub(super) async fn call(&self, request: Request) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Call { request, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn serve<C: BatchConnection>(options: &C::Options, mut rx: mpsc::Receiver<Call>) {
    let mut connection: Option<C> = None;
    let mut calls: Vec<Call> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut calls, MAX_BATCH).await > 0 {
        let (requests, replies): (Vec<Request>, Vec<_>) = calls.drain(..).map(|c| (c.request, c.reply)).unzip();
        let n = requests.len();
        let result = async {
            let conn = match &mut connection {
                Some(conn) => conn,
                slot => slot.insert(C::connect(options).await?),
            };
            conn.execute(requests).await
        }
        .await;
        match result {
            Ok(answers) if answers.len() == n => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that went away no longer needs its answer; the write stands.
                    let _ = reply.send(Ok(answer));
                }
            }
            other => {
                let e = other.err().unwrap_or_else(|| StoreError::new("batch answered the wrong number of calls"));
                // The transaction rolled back; start the next batch on a fresh connection in
                // case this one is what failed.
                connection = None;
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bsf::SqnScheme;

    fn row(impi: &str, sqn: u64) -> SubscriberRow {
        SubscriberRow {
            impi: impi.into(),
            imsi: String::new(),
            wrapped_k: vec![],
            wrapped_opc: vec![],
            sqn,
            amf: vec![0x80, 0],
            gba_type: "gba-me".into(),
        }
    }

    fn pending(impi: &str, rand: u8) -> Pending {
        Pending { impi: impi.into(), rand: [rand; 16], issued_at: 1, expires_at: 2 }
    }

    fn start(impi: &str, rand: u8) -> Request {
        Request::Start {
            impi: impi.into(),
            advance: SqnAdvance::Next(SqnScheme::default()),
            pending: pending(impi, rand),
        }
    }

    fn session(btid: &str, impi: &str) -> SessionRow {
        SessionRow {
            btid: btid.into(),
            impi: impi.into(),
            wrapped_ks: vec![],
            rand: [0; 16],
            gba_type: GbaType::GbaMe,
            bootstrapped_at: 0,
            expires_at: 1,
        }
    }

    #[test]
    fn two_runs_of_one_impi_in_one_batch_get_consecutive_sqns() {
        let plan = plan(vec![start("a", 1), start("a", 2), start("nobody", 3)], vec![], vec![row("a", 64)]);
        let sqns: Vec<u64> = plan
            .answers
            .iter()
            .filter_map(|a| match a {
                Answer::Start(StartAnswer::Subscriber(r)) => Some(r.sqn),
                _ => None,
            })
            .collect();
        assert_eq!(sqns, [96, 128]);
        assert_eq!(plan.answers[2], Answer::Start(StartAnswer::Unknown));
        assert_eq!(plan.sqn, [("a".to_owned(), 128)]);
        assert_eq!(plan.pending.len(), 3, "unknown IMPIs get a pending challenge too");
    }

    #[test]
    fn exhausted_sqn_records_nothing() {
        let plan = plan(vec![start("a", 1)], vec![], vec![row("a", crate::bsf::SQN_MAX)]);
        assert_eq!(plan.answers, [Answer::Start(StartAnswer::Exhausted)]);
        assert!(plan.sqn.is_empty() && plan.pending.is_empty());
    }

    #[test]
    fn a_taken_challenge_goes_to_the_first_taker_only() {
        let requests = vec![Request::Take { rand: [5; 16] }, Request::Take { rand: [5; 16] }];
        assert_eq!(take_keys(&requests), [[5; 16]]);
        let plan = plan(requests, vec![pending("a", 5)], vec![row("a", 64)]);
        assert_eq!(plan.answers[0], Answer::Take(Some((pending("a", 5), Some(row("a", 64))))));
        assert_eq!(plan.answers[1], Answer::Take(None));
        let plan = super::plan(vec![start("a", 6), Request::Take { rand: [6; 16] }], vec![], vec![row("a", 64)]);
        assert!(matches!(plan.answers[1], Answer::Take(Some(_))));
        assert!(plan.pending.is_empty(), "started and taken within the batch: nothing left to store");
    }

    #[test]
    fn later_sessions_replace_earlier_ones_by_impi_and_by_btid() {
        let requests = vec![
            Request::Session(session("x", "a")),
            Request::Session(session("y", "b")),
            Request::Session(session("z", "a")),
            Request::Session(session("y", "c")),
        ];
        let plan = plan(requests, vec![], vec![]);
        assert_eq!(plan.sessions, [session("z", "a"), session("y", "c")]);
        assert_eq!(plan.answers.len(), 4);
    }

    #[test]
    fn scripts_combine_for_sqlite_and_split_for_postgres() {
        let build = |combine| {
            let mut s = Script::<sqlx::sqlite::SqliteArguments>::new(combine);
            s.statement("BEGIN");
            s.statement("DELETE FROM t WHERE k IN ").list([1i64, 2]).unwrap();
            s.statement("UPDATE t SET v = ").bind(3i64).unwrap().text(" WHERE k = ").bind(4i64).unwrap();
            s.finish().into_iter().map(|(sql, args)| (sql, args.len())).collect::<Vec<_>>()
        };
        assert_eq!(build(true), [("BEGIN; DELETE FROM t WHERE k IN (?, ?); UPDATE t SET v = ? WHERE k = ?".into(), 4)]);
        assert_eq!(build(false).len(), 3);
        let mut pg = Script::<sqlx::postgres::PgArguments>::new(false);
        pg.statement("SELECT 1 WHERE 1 IN ").list([1i64, 2]).unwrap();
        pg.statement("SELECT ").bind(3i64).unwrap();
        let sql: Vec<String> = pg.finish().into_iter().map(|(sql, _)| sql).collect();
        assert_eq!(sql, ["SELECT 1 WHERE 1 IN ($1, $2)", "SELECT $1"]);
        assert_eq!(start_impis(&[start("b", 1), start("a", 2), start("b", 3)]), ["a", "b"]);
    }
}
