-- The SQL equivalent of one customer creation, without the audit chain:
-- one customer row and one audit row in one transaction.
\set n random(1, 2000000000)
BEGIN;
INSERT INTO customers (id, external_ref, email, locale, name, name_flags, address, address_flags, birth_date, gender, status, version, created_at, updated_at)
VALUES (gen_random_uuid(), 'PGB-' || :client_id || '-' || :n || '-' || (random() * 1e9)::bigint, 'bench@example.jp', 'ja', '山田太郎', '0000', '東京都千代田区千代田1-1', '0000000000000', '1980-02-17', '1', 'active', 1, now(), now());
INSERT INTO audit_events (seq, occurred_at, actor, action, subject_type, subject_id, customer_id, request_id, canonical, prev_hash, hash)
VALUES (nextval('bench_seq'), now(), 'user:bench', 'customer.created', 'customer', NULL, NULL, NULL, repeat('x', 900), repeat('0', 64), encode(sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'hex'));
COMMIT;
