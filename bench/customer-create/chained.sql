-- As plain.sql, but the audit row takes the next sequence number from the
-- chain head row, as kihon4 does: the head's row lock is held to commit.
\set n random(1, 2000000000)
BEGIN;
INSERT INTO customers (id, external_ref, email, locale, name, name_flags, address, address_flags, birth_date, gender, status, version, created_at, updated_at)
VALUES (gen_random_uuid(), 'PGC-' || :client_id || '-' || :n || '-' || (random() * 1e9)::bigint, 'bench@example.jp', 'ja', '山田太郎', '0000', '東京都千代田区千代田1-1', '0000000000000', '1980-02-17', '1', 'active', 1, now(), now());
UPDATE audit_chain SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq AS seq, last_hash AS prev \gset
INSERT INTO audit_events (seq, occurred_at, actor, action, subject_type, subject_id, customer_id, request_id, canonical, prev_hash, hash)
VALUES (:seq, now(), 'user:bench', 'customer.created', 'customer', NULL, NULL, NULL, repeat('x', 900), ':prev', encode(sha256(convert_to(':prev' || :seq, 'UTF8')), 'hex'));
UPDATE audit_chain SET last_hash = encode(sha256(convert_to(':prev' || :seq, 'UTF8')), 'hex') WHERE id = 1;
COMMIT;
