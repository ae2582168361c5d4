-- The reference's table contents: :rows consenting customers, each with a
-- pending sync job, in kihon4's own schema.
INSERT INTO customers (id, external_ref, email, locale, name, name_flags, address, address_flags, birth_date, gender, jpki_cert_serial, status, version, created_at, updated_at)
SELECT gen_random_uuid(), 'PGB-' || g, 'pgb' || g || '@example.jp', 'ja', '山田太郎', '0000', '東京都千代田区千代田1-1', '0000000000000', '1980-02-17', '1', to_hex(g + 1000000), 'active', 1, now(), now()
FROM generate_series(1, :rows) g;
INSERT INTO consents (id, customer_id, purpose, channel, role, text_version, text_sha256, cert_serial, cert_not_after, granted_at, expires_at, document_sha256, signature_sha256, signed_content, revocation_method)
SELECT gen_random_uuid(), id, 'basic4_update', 'online_signature', 'platform', 'bench', md5('text'), jpki_cert_serial, now() + interval '5 years', now(), now() + interval '10 years', md5(id::text), md5(id::text || 'signature'), convert_to('bench', 'UTF8'), 'crl'
FROM customers;
INSERT INTO sync_runs (id, trigger, scope, status, requested_by, created_at) VALUES ('00000000-0000-7000-8000-000000000001', 'cli', 'revoked', 'running', 'cli', now());
INSERT INTO sync_jobs (id, run_id, customer_id, cert_serial, status, attempts, run_at, created_at)
SELECT gen_random_uuid(), '00000000-0000-7000-8000-000000000001', id, jpki_cert_serial, 'pending', 0, now(), now() FROM customers;
ANALYZE;
