-- Play-backs of a recording that an offer's key allows (profile P-4 play_back_counter; codes
-- 0x01 and 0x03 for pay-per-time and pay-per-view offers). 0: live use only, as before.
ALTER TABLE purchase_data ADD COLUMN play_backs INTEGER NOT NULL DEFAULT 0
    CHECK (play_backs BETWEEN 0 AND 65535);
