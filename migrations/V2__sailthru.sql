-- Sailthru data-exporter destination tables (docs/sailthru.md).
--
-- One parent table per export member, child tables for the nested collections. Every row
-- carries export_date (the member name's date, the loader's version column: an older export
-- never overwrites a newer one) and the loader's _sluice_job_id / _sluice_loaded_at.
-- `timestamp` columns hold Sailthru's zone-less local times as exported; `timestamptz`
-- columns hold the {"$date": epoch ms} instants of opens and clicks (UTC).
-- Fields without a typed column are kept in `extra` (a JSON object), never dropped.
-- No foreign keys: parents and children arrive in separate batches, in any order.
CREATE SCHEMA IF NOT EXISTS sailthru;

-- blast.<date>.json: one row per blast (campaign send).
CREATE TABLE sailthru.blast (
    id                bigint PRIMARY KEY,
    name              text,
    day               date,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    export_date       date NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- message_blast.<date>.json: one row per (blast, profile) message.
CREATE TABLE sailthru.message_blast (
    blast_id          bigint NOT NULL,
    profile_id        text NOT NULL,
    message_id        bigint,
    send_time         timestamp,
    device            text,
    message_revenue   bigint,
    delivery_status   text,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    export_date       date NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blast_id, profile_id)
);
CREATE INDEX message_blast_profile ON sailthru.message_blast (profile_id);

-- message_blast opens[] and clicks[]: one row per action. Opens have no URL: '' so the
-- column can be part of the key (the views turn it back into NULL).
CREATE TABLE sailthru.message_blast_action (
    blast_id          bigint NOT NULL,
    profile_id        text NOT NULL,
    action            text NOT NULL CHECK (action IN ('open', 'click')),
    ts                timestamptz NOT NULL,
    url               text NOT NULL DEFAULT '',
    export_date       date NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blast_id, profile_id, action, ts, url)
);
CREATE INDEX message_blast_action_profile ON sailthru.message_blast_action (profile_id, action);

-- message_transactional.<date>.json: one row per transactional message.
CREATE TABLE sailthru.message_transactional (
    id                text PRIMARY KEY,
    profile_id        text,
    template          text,
    send_time         timestamp,
    device            text,
    message_revenue   bigint,
    delivery_status   text,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    export_date       date NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_transactional_profile ON sailthru.message_transactional (profile_id);

-- message_transactional opens[] and clicks[].
CREATE TABLE sailthru.message_transactional_action (
    message_id        text NOT NULL,
    profile_id        text,
    action            text NOT NULL CHECK (action IN ('open', 'click')),
    ts                timestamptz NOT NULL,
    url               text NOT NULL DEFAULT '',
    export_date       date NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, action, ts, url)
);
CREATE INDEX message_transactional_action_profile ON sailthru.message_transactional_action (profile_id, action);

-- profile.<date>.json: one row per profile (its state as of export_date). email follows the
-- connector's e-mail policy: as exported, SHA-256 hex of the trimmed lower-cased address, or NULL.
CREATE TABLE sailthru.profile (
    id                  text PRIMARY KEY,
    email               text,
    signup_time         timestamp,
    create_date         timestamp,
    optout_reason       text,
    optout_time         timestamp,
    total_opens         bigint,
    total_clicks        bigint,
    total_unique_opens  bigint,
    total_unique_clicks bigint,
    total_pageviews     bigint,
    total_messages      bigint,
    last_open           timestamp,
    last_click          timestamp,
    last_pageview       timestamp,
    geo_count           bigint,
    extra               jsonb NOT NULL DEFAULT '{}'::jsonb,
    export_date         date NOT NULL,
    _sluice_job_id      uuid NOT NULL,
    _sluice_loaded_at   timestamptz NOT NULL DEFAULT now()
);

-- profile.geo.{city,country,state,zip}: label -> count. A re-sent profile replaces its rows.
CREATE TABLE sailthru.profile_geo (
    id                text NOT NULL,
    scope             text NOT NULL CHECK (scope IN ('city', 'country', 'state', 'zip')),
    label             text NOT NULL,
    count             bigint,
    export_date       date NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, scope, label)
);

-- profile.browser: browser -> count.
CREATE TABLE sailthru.profile_browser (
    id                text NOT NULL,
    browser           text NOT NULL,
    count             bigint,
    export_date       date NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, browser)
);

-- profile.lists_signup: list -> signup time. List names differing only by case are distinct.
CREATE TABLE sailthru.profile_lists_signup (
    id                text NOT NULL,
    list              text NOT NULL,
    signup_time       timestamp,
    export_date       date NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, list)
);

-- profile.vars: name -> value with its JSON type (string, number, boolean, object, array).
-- A var whose JSON value is null is a row with SQL NULL in value (the loader stores JSON null
-- as NULL); the row's existence says the var is set.
CREATE TABLE sailthru.profile_vars (
    id                text NOT NULL,
    name              text NOT NULL,
    value             jsonb,
    export_date       date NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, name)
);

-- The original ingestion's shape: one row per action, a message without actions once with
-- NULL action columns.
CREATE VIEW sailthru.message_blast_flat AS
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

CREATE VIEW sailthru.message_transactional_flat AS
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
