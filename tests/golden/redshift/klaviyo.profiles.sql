-- table (Redshift)
CREATE TABLE IF NOT EXISTS "klaviyo"."profiles" (
    "id" VARCHAR(65535) NOT NULL,
    "email" VARCHAR(65535),
    "phone_number" VARCHAR(65535),
    "external_id" VARCHAR(65535),
    "first_name" VARCHAR(65535),
    "last_name" VARCHAR(65535),
    "organization" VARCHAR(65535),
    "locale" VARCHAR(65535),
    "title" VARCHAR(65535),
    "image" VARCHAR(65535),
    "created" TIMESTAMPTZ,
    "updated" TIMESTAMPTZ,
    "last_event_date" TIMESTAMPTZ,
    "location" SUPER,
    "properties" SUPER,
    "extra" SUPER,
    "_sluice_job_id" CHAR(36) NOT NULL,
    "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("id")
)
SORTKEY ("updated");

-- table (stand-in)
CREATE TABLE IF NOT EXISTS "klaviyo"."profiles" (
    "id" VARCHAR(65535) NOT NULL,
    "email" VARCHAR(65535),
    "phone_number" VARCHAR(65535),
    "external_id" VARCHAR(65535),
    "first_name" VARCHAR(65535),
    "last_name" VARCHAR(65535),
    "organization" VARCHAR(65535),
    "locale" VARCHAR(65535),
    "title" VARCHAR(65535),
    "image" VARCHAR(65535),
    "created" TIMESTAMPTZ,
    "updated" TIMESTAMPTZ,
    "last_event_date" TIMESTAMPTZ,
    "location" SUPER,
    "properties" SUPER,
    "extra" SUPER,
    "_sluice_job_id" CHAR(36) NOT NULL,
    "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("id")
);

-- stage
CREATE TEMP TABLE "_sluice_stage_0" ("id" VARCHAR(65535), "email" VARCHAR(65535), "phone_number" VARCHAR(65535), "external_id" VARCHAR(65535), "first_name" VARCHAR(65535), "last_name" VARCHAR(65535), "organization" VARCHAR(65535), "locale" VARCHAR(65535), "title" VARCHAR(65535), "image" VARCHAR(65535), "created" TIMESTAMPTZ, "updated" TIMESTAMPTZ, "last_event_date" TIMESTAMPTZ, "location" SUPER, "properties" SUPER, "extra" SUPER, _sluice_ord BIGINT);

-- dedupe
CREATE TEMP TABLE "_sluice_dedup_0" AS SELECT "id", "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title", "image", "created", "updated", "last_event_date", "location", "properties", "extra", _sluice_ord FROM (SELECT "id", "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title", "image", "created", "updated", "last_event_date", "location", "properties", "extra", _sluice_ord, ROW_NUMBER() OVER (PARTITION BY "id" ORDER BY "updated" DESC, _sluice_ord DESC) AS _sluice_rn
               FROM (SELECT "id", "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title", "image", "created", "updated", "last_event_date", "location", "properties", "extra", _sluice_ord, ROW_NUMBER() OVER (PARTITION BY _sluice_ord / 4294967296, "id" ORDER BY _sluice_ord DESC) AS _sluice_last
                       FROM "_sluice_stage_0") w
              WHERE _sluice_last = 1) x WHERE _sluice_rn = 1;

-- stale rows
DELETE FROM "_sluice_dedup_0" USING "klaviyo"."profiles" WHERE "klaviyo"."profiles"."id" = "_sluice_dedup_0"."id" AND ("klaviyo"."profiles"."updated" > "_sluice_dedup_0"."updated" OR (("klaviyo"."profiles"."email" = "_sluice_dedup_0"."email" OR ("klaviyo"."profiles"."email" IS NULL AND "_sluice_dedup_0"."email" IS NULL)) AND ("klaviyo"."profiles"."phone_number" = "_sluice_dedup_0"."phone_number" OR ("klaviyo"."profiles"."phone_number" IS NULL AND "_sluice_dedup_0"."phone_number" IS NULL)) AND ("klaviyo"."profiles"."external_id" = "_sluice_dedup_0"."external_id" OR ("klaviyo"."profiles"."external_id" IS NULL AND "_sluice_dedup_0"."external_id" IS NULL)) AND ("klaviyo"."profiles"."first_name" = "_sluice_dedup_0"."first_name" OR ("klaviyo"."profiles"."first_name" IS NULL AND "_sluice_dedup_0"."first_name" IS NULL)) AND ("klaviyo"."profiles"."last_name" = "_sluice_dedup_0"."last_name" OR ("klaviyo"."profiles"."last_name" IS NULL AND "_sluice_dedup_0"."last_name" IS NULL)) AND ("klaviyo"."profiles"."organization" = "_sluice_dedup_0"."organization" OR ("klaviyo"."profiles"."organization" IS NULL AND "_sluice_dedup_0"."organization" IS NULL)) AND ("klaviyo"."profiles"."locale" = "_sluice_dedup_0"."locale" OR ("klaviyo"."profiles"."locale" IS NULL AND "_sluice_dedup_0"."locale" IS NULL)) AND ("klaviyo"."profiles"."title" = "_sluice_dedup_0"."title" OR ("klaviyo"."profiles"."title" IS NULL AND "_sluice_dedup_0"."title" IS NULL)) AND ("klaviyo"."profiles"."image" = "_sluice_dedup_0"."image" OR ("klaviyo"."profiles"."image" IS NULL AND "_sluice_dedup_0"."image" IS NULL)) AND ("klaviyo"."profiles"."created" = "_sluice_dedup_0"."created" OR ("klaviyo"."profiles"."created" IS NULL AND "_sluice_dedup_0"."created" IS NULL)) AND ("klaviyo"."profiles"."updated" = "_sluice_dedup_0"."updated" OR ("klaviyo"."profiles"."updated" IS NULL AND "_sluice_dedup_0"."updated" IS NULL)) AND ("klaviyo"."profiles"."last_event_date" = "_sluice_dedup_0"."last_event_date" OR ("klaviyo"."profiles"."last_event_date" IS NULL AND "_sluice_dedup_0"."last_event_date" IS NULL)) AND (JSON_SERIALIZE("klaviyo"."profiles"."location") = JSON_SERIALIZE("_sluice_dedup_0"."location") OR ("klaviyo"."profiles"."location" IS NULL AND "_sluice_dedup_0"."location" IS NULL)) AND (JSON_SERIALIZE("klaviyo"."profiles"."properties") = JSON_SERIALIZE("_sluice_dedup_0"."properties") OR ("klaviyo"."profiles"."properties" IS NULL AND "_sluice_dedup_0"."properties" IS NULL)) AND (JSON_SERIALIZE("klaviyo"."profiles"."extra") = JSON_SERIALIZE("_sluice_dedup_0"."extra") OR ("klaviyo"."profiles"."extra" IS NULL AND "_sluice_dedup_0"."extra" IS NULL))));

-- merge
MERGE INTO "klaviyo"."profiles" USING "_sluice_dedup_0" ON "klaviyo"."profiles"."id" = "_sluice_dedup_0"."id"
         WHEN MATCHED THEN UPDATE SET "email" = "_sluice_dedup_0"."email", "phone_number" = "_sluice_dedup_0"."phone_number", "external_id" = "_sluice_dedup_0"."external_id", "first_name" = "_sluice_dedup_0"."first_name", "last_name" = "_sluice_dedup_0"."last_name", "organization" = "_sluice_dedup_0"."organization", "locale" = "_sluice_dedup_0"."locale", "title" = "_sluice_dedup_0"."title", "image" = "_sluice_dedup_0"."image", "created" = "_sluice_dedup_0"."created", "updated" = "_sluice_dedup_0"."updated", "last_event_date" = "_sluice_dedup_0"."last_event_date", "location" = "_sluice_dedup_0"."location", "properties" = "_sluice_dedup_0"."properties", "extra" = "_sluice_dedup_0"."extra", "_sluice_job_id" = '00000000-0000-4000-8000-000000000001', "_sluice_loaded_at" = '2026-12-01 10:00:00.500000+00'
         WHEN NOT MATCHED THEN INSERT ("id", "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title", "image", "created", "updated", "last_event_date", "location", "properties", "extra", "_sluice_job_id", "_sluice_loaded_at") VALUES ("_sluice_dedup_0"."id", "_sluice_dedup_0"."email", "_sluice_dedup_0"."phone_number", "_sluice_dedup_0"."external_id", "_sluice_dedup_0"."first_name", "_sluice_dedup_0"."last_name", "_sluice_dedup_0"."organization", "_sluice_dedup_0"."locale", "_sluice_dedup_0"."title", "_sluice_dedup_0"."image", "_sluice_dedup_0"."created", "_sluice_dedup_0"."updated", "_sluice_dedup_0"."last_event_date", "_sluice_dedup_0"."location", "_sluice_dedup_0"."properties", "_sluice_dedup_0"."extra", '00000000-0000-4000-8000-000000000001', '2026-12-01 10:00:00.500000+00');

-- copy
COPY "_sluice_stage_0" ("id", "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title", "image", "created", "updated", "last_event_date", "location", "properties", "extra", _sluice_ord) FROM 's3://bucket/sluice/klaviyo.profiles/2026-12-01/00000000-0000-4000-8000-000000000001/t-0.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/sluice-load' FORMAT AS JSON 'auto' GZIP MANIFEST TIMEFORMAT 'auto' REGION 'us-east-1';

