-- table (Redshift)
CREATE TABLE IF NOT EXISTS "klaviyo"."events" (
    "id" VARCHAR(65535) NOT NULL,
    "metric_id" VARCHAR(65535),
    "profile_id" VARCHAR(65535),
    "datetime" TIMESTAMPTZ,
    "timestamp" BIGINT,
    "uuid" VARCHAR(65535),
    "value" DOUBLE PRECISION,
    "event_properties" SUPER,
    "extra" SUPER,
    "_sluice_job_id" CHAR(36) NOT NULL,
    "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("id")
)
DISTKEY ("profile_id")
SORTKEY ("datetime");

-- table (stand-in)
CREATE TABLE IF NOT EXISTS "klaviyo"."events" (
    "id" VARCHAR(65535) NOT NULL,
    "metric_id" VARCHAR(65535),
    "profile_id" VARCHAR(65535),
    "datetime" TIMESTAMPTZ,
    "timestamp" BIGINT,
    "uuid" VARCHAR(65535),
    "value" DOUBLE PRECISION,
    "event_properties" SUPER,
    "extra" SUPER,
    "_sluice_job_id" CHAR(36) NOT NULL,
    "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("id")
);

-- stage
CREATE TEMP TABLE "_sluice_stage_0" ("id" VARCHAR(65535), "metric_id" VARCHAR(65535), "profile_id" VARCHAR(65535), "datetime" TIMESTAMPTZ, "timestamp" BIGINT, "uuid" VARCHAR(65535), "value" DOUBLE PRECISION, "event_properties" SUPER, "extra" SUPER, _sluice_ord BIGINT);

-- insert
INSERT INTO "_sluice_stage_0" ("id", "metric_id", "profile_id", "datetime", "timestamp", "uuid", "value", "event_properties", "extra", _sluice_ord) VALUES ('evt_1', 'met_1', 'prof_1', '2024-01-01 00:00:00.000000+00', 1704067200, 'u-1', 9.5, JSON_PARSE('{"a":"it''s \\\\ here"}'), JSON_PARSE('{}'), 4294967296);

-- dedupe
CREATE TEMP TABLE "_sluice_dedup_0" AS SELECT "id", "metric_id", "profile_id", "datetime", "timestamp", "uuid", "value", "event_properties", "extra", _sluice_ord FROM (SELECT "id", "metric_id", "profile_id", "datetime", "timestamp", "uuid", "value", "event_properties", "extra", _sluice_ord, ROW_NUMBER() OVER (PARTITION BY "id" ORDER BY _sluice_ord DESC) AS _sluice_rn
               FROM "_sluice_stage_0") x WHERE _sluice_rn = 1;

-- stale rows
DELETE FROM "_sluice_dedup_0" USING "klaviyo"."events" WHERE "klaviyo"."events"."id" = "_sluice_dedup_0"."id" AND (("klaviyo"."events"."metric_id" = "_sluice_dedup_0"."metric_id" OR ("klaviyo"."events"."metric_id" IS NULL AND "_sluice_dedup_0"."metric_id" IS NULL)) AND ("klaviyo"."events"."profile_id" = "_sluice_dedup_0"."profile_id" OR ("klaviyo"."events"."profile_id" IS NULL AND "_sluice_dedup_0"."profile_id" IS NULL)) AND ("klaviyo"."events"."datetime" = "_sluice_dedup_0"."datetime" OR ("klaviyo"."events"."datetime" IS NULL AND "_sluice_dedup_0"."datetime" IS NULL)) AND ("klaviyo"."events"."timestamp" = "_sluice_dedup_0"."timestamp" OR ("klaviyo"."events"."timestamp" IS NULL AND "_sluice_dedup_0"."timestamp" IS NULL)) AND ("klaviyo"."events"."uuid" = "_sluice_dedup_0"."uuid" OR ("klaviyo"."events"."uuid" IS NULL AND "_sluice_dedup_0"."uuid" IS NULL)) AND ("klaviyo"."events"."value" = "_sluice_dedup_0"."value" OR ("klaviyo"."events"."value" IS NULL AND "_sluice_dedup_0"."value" IS NULL)) AND (JSON_SERIALIZE("klaviyo"."events"."event_properties") = JSON_SERIALIZE("_sluice_dedup_0"."event_properties") OR ("klaviyo"."events"."event_properties" IS NULL AND "_sluice_dedup_0"."event_properties" IS NULL)) AND (JSON_SERIALIZE("klaviyo"."events"."extra") = JSON_SERIALIZE("_sluice_dedup_0"."extra") OR ("klaviyo"."events"."extra" IS NULL AND "_sluice_dedup_0"."extra" IS NULL)));

-- merge
MERGE INTO "klaviyo"."events" USING "_sluice_dedup_0" ON "klaviyo"."events"."id" = "_sluice_dedup_0"."id"
         WHEN MATCHED THEN UPDATE SET "metric_id" = "_sluice_dedup_0"."metric_id", "profile_id" = "_sluice_dedup_0"."profile_id", "datetime" = "_sluice_dedup_0"."datetime", "timestamp" = "_sluice_dedup_0"."timestamp", "uuid" = "_sluice_dedup_0"."uuid", "value" = "_sluice_dedup_0"."value", "event_properties" = "_sluice_dedup_0"."event_properties", "extra" = "_sluice_dedup_0"."extra", "_sluice_job_id" = '00000000-0000-4000-8000-000000000001', "_sluice_loaded_at" = '2026-12-01 10:00:00.500000+00'
         WHEN NOT MATCHED THEN INSERT ("id", "metric_id", "profile_id", "datetime", "timestamp", "uuid", "value", "event_properties", "extra", "_sluice_job_id", "_sluice_loaded_at") VALUES ("_sluice_dedup_0"."id", "_sluice_dedup_0"."metric_id", "_sluice_dedup_0"."profile_id", "_sluice_dedup_0"."datetime", "_sluice_dedup_0"."timestamp", "_sluice_dedup_0"."uuid", "_sluice_dedup_0"."value", "_sluice_dedup_0"."event_properties", "_sluice_dedup_0"."extra", '00000000-0000-4000-8000-000000000001', '2026-12-01 10:00:00.500000+00');

-- copy
COPY "_sluice_stage_0" ("id", "metric_id", "profile_id", "datetime", "timestamp", "uuid", "value", "event_properties", "extra", _sluice_ord) FROM 's3://bucket/sluice/klaviyo.events/2026-12-01/00000000-0000-4000-8000-000000000001/t-0.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/sluice-load' FORMAT AS JSON 'auto' GZIP MANIFEST TIMEFORMAT 'auto' REGION 'us-east-1';

