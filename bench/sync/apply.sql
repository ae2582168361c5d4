-- One change as kihon4 applies it, one change per transaction: the
-- customer locked, its active consent looked up, the record updated, its
-- history row, the subscription's two registration intents, the notice (a
-- rendered message of :msg bytes), the audit event (:canon bytes of
-- canonical JSON and :pv personal values) through the chain head row, and
-- the job's record. Sizes come from kihon4's own rows in the same run.
\set k random(1, :rows)
BEGIN;
SELECT id AS cid, version FROM customers WHERE external_ref = 'PGB-' || :k FOR UPDATE \gset
SELECT c.id AS consent FROM consents c WHERE c.customer_id = ':cid' AND c.expires_at > now() AND NOT EXISTS (SELECT 1 FROM consent_events e WHERE e.consent_id = c.id AND e.kind IN ('withdrawn', 'renewed', 'expired')) ORDER BY c.id DESC LIMIT 1 \gset
UPDATE customers SET address = '千葉県千葉市中央区市場町' || :k, version = version + 1, jpki_cert_serial = md5(random()::text), updated_at = now() WHERE id = ':cid' AND version = :version;
INSERT INTO basic4_history (id, customer_id, customer_version, source, before, after, reported_on, changed_at) VALUES (gen_random_uuid(), ':cid', :version + 1, 'sync', '{"name":"山田太郎","address":"東京都千代田区千代田1-1","birth_date":"1980-02-17","gender":"1"}', '{"name":"山田太郎","address":"千葉県千葉市中央区市場町1","birth_date":"1980-02-17","gender":"1"}', current_date, now());
INSERT INTO provider_registrations (id, consent_id, cert_serial, action, status, attempts, run_at, created_at) VALUES (gen_random_uuid(), ':consent', 'aa' || :k, 'unsubscribe', 'pending', 0, now(), now()), (gen_random_uuid(), ':consent', 'bb' || :k, 'subscribe', 'pending', 0, now(), now());
INSERT INTO outbox (id, customer_id, kind, locale, to_address, message, message_id, status, attempts, run_at, created_at) VALUES (gen_random_uuid(), ':cid', 'basic4_changed', 'ja', 'pgb@example.jp', convert_to(repeat('x', :msg), 'UTF8'), gen_random_uuid()::text || '@bench.example.jp', 'pending', 0, now(), now());
UPDATE audit_chain SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq AS seq, last_hash AS prev \gset
INSERT INTO audit_events (seq, occurred_at, actor, action, subject_type, subject_id, customer_id, request_id, canonical, prev_hash, hash) VALUES (:seq, now(), 'worker', 'customer.updated', 'customer', ':cid', ':cid', NULL, repeat('x', :canon), ':prev', encode(sha256(convert_to(':prev' || :seq, 'UTF8')), 'hex'));
INSERT INTO audit_personal_values (seq, field, value, salt) SELECT :seq, 'after.basic4.f' || g, '千葉県千葉市中央区市場町1', md5(g::text) FROM generate_series(1, :pv) g;
UPDATE audit_chain SET last_hash = encode(sha256(convert_to(':prev' || :seq, 'UTF8')), 'hex') WHERE id = 1;
UPDATE sync_jobs SET status = 'done', outcome = 'changed', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL WHERE customer_id = ':cid' AND status = 'pending';
COMMIT;
