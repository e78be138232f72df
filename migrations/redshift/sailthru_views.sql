-- Redshift (and its PostgreSQL stand-in): the views that follow the generated tables.
-- Not a refinery migration (no V prefix): `sluicectl migrate --destination NAME` applies
-- it after creating the tables from the Postgres catalog (shared/destinations, redshift).
-- Only views in the SQL both servers speak live here; the question views of V3 use
-- Postgres-only functions and are not created in Redshift.

CREATE OR REPLACE VIEW sailthru.message_blast_flat AS
SELECT m.blast_id,
       m.profile_id,
       m.message_id,
       m.send_time,
       m.device,
       m.message_revenue,
       m.delivery_status,
       m.extra,
       m.export_date,
       a.action            AS action_name,
       a.ts                AS action_ts,
       NULLIF(a.url, '')   AS action_url
  FROM sailthru.message_blast m
  LEFT JOIN sailthru.message_blast_action a
    ON a.blast_id = m.blast_id AND a.profile_id = m.profile_id;

CREATE OR REPLACE VIEW sailthru.message_transactional_flat AS
SELECT m.id,
       m.profile_id,
       m.template,
       m.send_time,
       m.device,
       m.message_revenue,
       m.delivery_status,
       m.extra,
       m.export_date,
       a.action            AS action_name,
       a.ts                AS action_ts,
       NULLIF(a.url, '')   AS action_url
  FROM sailthru.message_transactional m
  LEFT JOIN sailthru.message_transactional_action a
    ON a.message_id = m.id;
