-- Klaviyo destination tables (docs/klaviyo.md).
--
-- One table per Klaviyo resource read through the JSON:API (revision 2026-07-15), plus the
-- list and segment memberships. Times are timestamptz (UTC). Attributes without a typed
-- column are kept in `extra` (a JSON object; relationships other than the typed ones under
-- extra.relationships), never dropped. Every row carries the loader's _sluice_job_id and
-- _sluice_loaded_at. Only profiles have a version column (`updated`): an older copy of a
-- profile never overwrites a newer one. No foreign keys: rows arrive in any order.
CREATE SCHEMA IF NOT EXISTS klaviyo;

-- GET /api/metrics: one row per metric.
CREATE TABLE klaviyo.metrics (
    id                text PRIMARY KEY,
    name              text,
    created           timestamptz,
    updated           timestamptz,
    integration       jsonb,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /api/events: one row per event.
--   metric_id / profile_id: relationships.metric / relationships.profile ids.
--   datetime: attributes.datetime; timestamp: attributes.timestamp (epoch seconds).
--   value: event_properties."$value" when it is numeric.
CREATE TABLE klaviyo.events (
    id                text PRIMARY KEY,
    metric_id         text,
    profile_id        text,
    datetime          timestamptz,
    "timestamp"       bigint,
    uuid              text,
    value             double precision,
    event_properties  jsonb,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_metric_datetime ON klaviyo.events (metric_id, datetime);
CREATE INDEX events_profile ON klaviyo.events (profile_id);

-- GET /api/profiles (by `updated` window, by id for members, or included with events).
CREATE TABLE klaviyo.profiles (
    id                text PRIMARY KEY,
    email             text,
    phone_number      text,
    external_id       text,
    first_name        text,
    last_name         text,
    organization      text,
    locale            text,
    title             text,
    image             text,
    created           timestamptz,
    updated           timestamptz,
    last_event_date   timestamptz,
    location          jsonb,
    properties        jsonb,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_updated ON klaviyo.profiles (updated);
CREATE INDEX profiles_email ON klaviyo.profiles (email);

-- GET /api/lists.
CREATE TABLE klaviyo.lists (
    id                text PRIMARY KEY,
    name              text,
    created           timestamptz,
    updated           timestamptz,
    opt_in_process    text,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /api/segments.
CREATE TABLE klaviyo.segments (
    id                text PRIMARY KEY,
    name              text,
    created           timestamptz,
    updated           timestamptz,
    is_active         boolean,
    is_processing     boolean,
    is_starred        boolean,
    definition        jsonb,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /api/lists/{id}/relationships/profiles. Members who left are not removed yet.
CREATE TABLE klaviyo.list_members (
    list_id           text NOT NULL,
    profile_id        text NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, profile_id)
);
CREATE INDEX list_members_profile ON klaviyo.list_members (profile_id);

-- GET /api/segments/{id}/relationships/profiles. Members who left are not removed yet.
CREATE TABLE klaviyo.segment_members (
    segment_id        text NOT NULL,
    profile_id        text NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment_id, profile_id)
);
CREATE INDEX segment_members_profile ON klaviyo.segment_members (profile_id);
