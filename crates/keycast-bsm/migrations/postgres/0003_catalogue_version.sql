-- A stamp that moves with every change of the catalogue or the keys (issue 5): a store caches
-- what it reads of them and re-reads the stamp at most every few hundred milliseconds, so that a
-- change made by any process (another BSM on the same database, an operator's tool) reaches it.
CREATE TABLE catalogue_version (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO catalogue_version (id, version) VALUES (1, 0);

CREATE FUNCTION keycast_catalogue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalogue_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER services_changed AFTER INSERT OR UPDATE OR DELETE ON services
    FOR EACH STATEMENT EXECUTE FUNCTION keycast_catalogue_changed();
CREATE TRIGGER programs_changed AFTER INSERT OR UPDATE OR DELETE ON programs
    FOR EACH STATEMENT EXECUTE FUNCTION keycast_catalogue_changed();
CREATE TRIGGER items_changed AFTER INSERT OR UPDATE OR DELETE ON purchase_items
    FOR EACH STATEMENT EXECUTE FUNCTION keycast_catalogue_changed();
CREATE TRIGGER item_services_changed AFTER INSERT OR UPDATE OR DELETE ON purchase_item_services
    FOR EACH STATEMENT EXECUTE FUNCTION keycast_catalogue_changed();
CREATE TRIGGER offers_changed AFTER INSERT OR UPDATE OR DELETE ON purchase_data
    FOR EACH STATEMENT EXECUTE FUNCTION keycast_catalogue_changed();
CREATE TRIGGER keys_changed AFTER INSERT OR UPDATE OR DELETE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION keycast_catalogue_changed();
