-- A stamp that moves with every change of the catalogue or the keys (issue 5): a store caches
-- what it reads of them and re-reads the stamp at most every few hundred milliseconds, so that a
-- change made by any process (another BSM on the same database, an operator's tool) reaches it.
CREATE TABLE catalogue_version (
    id      INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT;
INSERT INTO catalogue_version (id, version) VALUES (1, 0);

CREATE TRIGGER services_ins AFTER INSERT ON services BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER services_upd AFTER UPDATE ON services BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER services_del AFTER DELETE ON services BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER programs_ins AFTER INSERT ON programs BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER programs_upd AFTER UPDATE ON programs BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER programs_del AFTER DELETE ON programs BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER items_ins AFTER INSERT ON purchase_items BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER items_upd AFTER UPDATE ON purchase_items BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER items_del AFTER DELETE ON purchase_items BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER item_services_ins AFTER INSERT ON purchase_item_services BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER item_services_upd AFTER UPDATE ON purchase_item_services BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER item_services_del AFTER DELETE ON purchase_item_services BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER offers_ins AFTER INSERT ON purchase_data BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER offers_upd AFTER UPDATE ON purchase_data BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER offers_del AFTER DELETE ON purchase_data BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER keys_ins AFTER INSERT ON keys BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER keys_upd AFTER UPDATE ON keys BEGIN UPDATE catalogue_version SET version = version + 1; END;
CREATE TRIGGER keys_del AFTER DELETE ON keys BEGIN UPDATE catalogue_version SET version = version + 1; END;
