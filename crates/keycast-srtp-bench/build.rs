//! Finds Debian's libsrtp2 (2.x: the `srtp_policy_t` layout with MKI arrays, 2.1 to 2.6) and
//! links it, setting `cfg(have_libsrtp2)`. Without it the crate builds anyway: the bench and
//! the interop test then only print that they were skipped. `KEYCAST_NO_LIBSRTP2=1` forces the
//! skip.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(have_libsrtp2)");
    println!("cargo::rerun-if-env-changed=KEYCAST_NO_LIBSRTP2");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("KEYCAST_NO_LIBSRTP2").is_some_and(|v| v != "0") {
        println!("cargo::warning=KEYCAST_NO_LIBSRTP2 is set: the libsrtp2 comparison is skipped");
        return;
    }
    match probe() {
        Ok(how) => {
            println!("cargo::rustc-cfg=have_libsrtp2");
            println!("cargo::rustc-link-lib=dylib=srtp2");
            if let Some(dir) = how {
                println!("cargo::rustc-link-search=native={dir}");
            }
        }
        Err(why) => println!(
            "cargo::warning=libsrtp2 2.x not found ({why}); the SRTP-vs-libsrtp bench and interop test will report \
             that they were skipped (apt-get install libsrtp2-dev)"
        ),
    }
}

/// `Ok(Some(dir))` to add a search path, `Ok(None)` when the default paths hold it.
fn probe() -> Result<Option<String>, String> {
    // pkg-config first: it knows the version.
    if let Ok(out) = Command::new("pkg-config").args(["--modversion", "libsrtp2"]).output()
        && out.status.success()
    {
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if major != 2 || minor < 1 {
            return Err(format!("pkg-config reports libsrtp2 {version}; the FFI declarations need 2.1 to 2.x"));
        }
        let dir = Command::new("pkg-config")
            .args(["--variable=libdir", "libsrtp2"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|d| !d.is_empty());
        return Ok(dir);
    }
    // No pkg-config or no .pc file: look for the development symlink in the usual places.
    let header = Path::new("/usr/include/srtp2/srtp.h");
    let mut dirs = vec!["/usr/lib".to_owned(), "/usr/local/lib".to_owned()];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with("-linux-gnu"))
                .map(|e| e.path().to_string_lossy().into_owned()),
        );
    }
    match dirs.into_iter().find(|d| Path::new(d).join("libsrtp2.so").exists()) {
        Some(dir) if header.exists() => Ok(Some(dir)),
        Some(_) => Err("libsrtp2.so found but not /usr/include/srtp2/srtp.h".to_owned()),
        None => Err("neither pkg-config nor /usr/lib*/libsrtp2.so knows it".to_owned()),
    }
}
