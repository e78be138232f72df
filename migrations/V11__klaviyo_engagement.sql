-- Klaviyo campaigns, flows, templates, tags, suppressions and metric aggregates
-- (docs/klaviyo.md, "Engagement streams"; issue 17).
--
-- As in V4: times are timestamptz (UTC); attributes without a typed column are kept in
-- `extra` (relationships other than the typed ones under extra.relationships); every row
-- carries the loader's _sluice_job_id and _sluice_loaded_at; no foreign keys (rows arrive
-- in any order). Version columns: a row is only replaced by one at least as new.

-- GET /api/campaigns (one job task per channel): one row per campaign.
--   channel: the messages.channel filter the campaign was listed under (email, sms,
--   mobile_push); send_options, tracking_options, send_strategy, audiences: as served.
CREATE TABLE klaviyo.campaigns (
    id                text PRIMARY KEY,
    channel           text NOT NULL,
    name              text,
    status            text,
    archived          boolean,
    audiences         jsonb,
    send_options      jsonb,
    tracking_options  jsonb,
    send_strategy     jsonb,
    created_at        timestamptz,
    scheduled_at      timestamptz,
    updated_at        timestamptz,
    send_time         timestamptz,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- The campaign's messages (include=campaign-messages): the collection of each campaign,
-- replaced whole with it. `id` is what events carry as event_properties."$message".
CREATE TABLE klaviyo.campaign_messages (
    campaign_id       text NOT NULL,
    id                text NOT NULL,
    channel           text,
    label             text,
    subject           text,
    template_id       text,
    send_times        jsonb,
    definition        jsonb,
    created_at        timestamptz,
    updated_at        timestamptz,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, id)
);
CREATE INDEX campaign_messages_id ON klaviyo.campaign_messages (id);

-- GET /api/flows: one row per flow.
CREATE TABLE klaviyo.flows (
    id                text PRIMARY KEY,
    name              text,
    status            text,
    archived          boolean,
    trigger_type      text,
    created           timestamptz,
    updated           timestamptz,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- The flow's actions (include=flow-actions), replaced whole with their flow.
--   action_type: definition.type (time-delay, send-email, …).
CREATE TABLE klaviyo.flow_actions (
    flow_id           text NOT NULL,
    id                text NOT NULL,
    action_type       text,
    created           timestamptz,
    updated           timestamptz,
    definition        jsonb,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_id, id)
);

-- GET /api/flow-actions/{id}/flow-messages: one row per flow message. `id` is what events
-- carry as event_properties."$message" (and the flow's id as "$flow").
CREATE TABLE klaviyo.flow_messages (
    id                text PRIMARY KEY,
    flow_id           text,
    flow_action_id    text,
    channel           text,
    name              text,
    subject_line      text,
    template_id       text,
    created           timestamptz,
    updated           timestamptz,
    definition        jsonb,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /api/templates: one row per template.
CREATE TABLE klaviyo.templates (
    id                text PRIMARY KEY,
    name              text,
    editor_type       text,
    html              text,
    text              text,
    amp               text,
    created           timestamptz,
    updated           timestamptz,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /api/tag-groups.
CREATE TABLE klaviyo.tag_groups (
    id                text PRIMARY KEY,
    name              text,
    exclusive         boolean,
    "default"         boolean,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /api/tags?include=tag-group.
CREATE TABLE klaviyo.tags (
    id                text PRIMARY KEY,
    name              text,
    tag_group_id      text,
    extra             jsonb NOT NULL DEFAULT '{}'::jsonb,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /api/tags/{id}/relationships/{campaigns,flows,lists,segments}: the resources each
-- tag is on, one table per kind, each replaced whole per tag.
CREATE TABLE klaviyo.tag_campaigns (
    tag_id            text NOT NULL,
    campaign_id       text NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tag_id, campaign_id)
);
CREATE TABLE klaviyo.tag_flows (
    tag_id            text NOT NULL,
    flow_id           text NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tag_id, flow_id)
);
CREATE TABLE klaviyo.tag_lists (
    tag_id            text NOT NULL,
    list_id           text NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tag_id, list_id)
);
CREATE TABLE klaviyo.tag_segments (
    tag_id            text NOT NULL,
    segment_id        text NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tag_id, segment_id)
);

-- Profiles whose email marketing is suppressed (what Airbyte calls global exclusions):
-- GET /api/profiles?additional-fields[profile]=subscriptions, one row per entry of
-- subscriptions.email.marketing.suppression.
CREATE TABLE klaviyo.suppressions (
    profile_id        text NOT NULL,
    reason            text NOT NULL,
    "timestamp"       timestamptz,
    email             text,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (profile_id, reason)
);

-- POST /api/metric-aggregates: one row per metric, interval, interval start, grouping,
-- dimension values and measurement.
--   interval: day or hour; date: the interval's start (UTC);
--   grouping: the `by` dimension names as a JSON array text ('[]' when ungrouped);
--   dimensions: the row's dimension values as a JSON array text, in `grouping` order;
--   measurement: count, sum_value or unique; value: its value.
CREATE TABLE klaviyo.metric_aggregates (
    metric_id         text NOT NULL,
    "interval"        text NOT NULL,
    date              timestamptz NOT NULL,
    grouping          text NOT NULL,
    dimensions        text NOT NULL,
    measurement       text NOT NULL,
    value             double precision,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (metric_id, "interval", date, grouping, dimensions, measurement)
);
