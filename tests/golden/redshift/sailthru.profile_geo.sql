-- table (Redshift)
CREATE TABLE IF NOT EXISTS "sailthru"."profile_geo" (
    "id" VARCHAR(65535) NOT NULL,
    "scope" VARCHAR(65535) NOT NULL,
    "label" VARCHAR(65535) NOT NULL,
    "count" BIGINT,
    "export_date" DATE NOT NULL,
    "_sluice_job_id" CHAR(36) NOT NULL,
    "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("id", "scope", "label")
)
SORTKEY ("export_date");

-- table (stand-in)
CREATE TABLE IF NOT EXISTS "sailthru"."profile_geo" (
    "id" VARCHAR(65535) NOT NULL,
    "scope" VARCHAR(65535) NOT NULL,
    "label" VARCHAR(65535) NOT NULL,
    "count" BIGINT,
    "export_date" DATE NOT NULL,
    "_sluice_job_id" CHAR(36) NOT NULL,
    "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("id", "scope", "label")
);

-- stage
CREATE TEMP TABLE "_sluice_stage_0" ("id" VARCHAR(65535), "scope" VARCHAR(65535), "label" VARCHAR(65535), "count" BIGINT, "export_date" DATE, _sluice_ord BIGINT);

-- replace scope
DELETE FROM "sailthru"."profile_geo" WHERE (("sailthru"."profile_geo"."id" = '5362b9aff9c510f432f47910')) AND "sailthru"."profile_geo"."export_date" <= '2016-04-01' AND NOT EXISTS (SELECT 1 FROM "_sluice_stage_0" WHERE "_sluice_stage_0"."id" = "sailthru"."profile_geo"."id" AND "_sluice_stage_0"."scope" = "sailthru"."profile_geo"."scope" AND "_sluice_stage_0"."label" = "sailthru"."profile_geo"."label");

-- dedupe
CREATE TEMP TABLE "_sluice_dedup_0" AS SELECT "id", "scope", "label", "count", "export_date", _sluice_ord FROM (SELECT "id", "scope", "label", "count", "export_date", _sluice_ord, ROW_NUMBER() OVER (PARTITION BY "id", "scope", "label" ORDER BY "export_date" DESC, _sluice_ord DESC) AS _sluice_rn
               FROM (SELECT "id", "scope", "label", "count", "export_date", _sluice_ord, ROW_NUMBER() OVER (PARTITION BY _sluice_ord / 4294967296, "id", "scope", "label" ORDER BY _sluice_ord DESC) AS _sluice_last
                       FROM "_sluice_stage_0") w
              WHERE _sluice_last = 1) x WHERE _sluice_rn = 1;

-- parent guard
DELETE FROM "_sluice_dedup_0" WHERE EXISTS (SELECT 1 FROM "sailthru"."profile" WHERE "sailthru"."profile"."id" = "_sluice_dedup_0"."id" AND "sailthru"."profile"."export_date" > "_sluice_dedup_0"."export_date");

-- stale rows
DELETE FROM "_sluice_dedup_0" USING "sailthru"."profile_geo" WHERE "sailthru"."profile_geo"."id" = "_sluice_dedup_0"."id" AND "sailthru"."profile_geo"."scope" = "_sluice_dedup_0"."scope" AND "sailthru"."profile_geo"."label" = "_sluice_dedup_0"."label" AND ("sailthru"."profile_geo"."export_date" > "_sluice_dedup_0"."export_date" OR (("sailthru"."profile_geo"."count" = "_sluice_dedup_0"."count" OR ("sailthru"."profile_geo"."count" IS NULL AND "_sluice_dedup_0"."count" IS NULL)) AND ("sailthru"."profile_geo"."export_date" = "_sluice_dedup_0"."export_date" OR ("sailthru"."profile_geo"."export_date" IS NULL AND "_sluice_dedup_0"."export_date" IS NULL))));

-- merge
MERGE INTO "sailthru"."profile_geo" USING "_sluice_dedup_0" ON "sailthru"."profile_geo"."id" = "_sluice_dedup_0"."id" AND "sailthru"."profile_geo"."scope" = "_sluice_dedup_0"."scope" AND "sailthru"."profile_geo"."label" = "_sluice_dedup_0"."label"
         WHEN MATCHED THEN UPDATE SET "count" = "_sluice_dedup_0"."count", "export_date" = "_sluice_dedup_0"."export_date", "_sluice_job_id" = '00000000-0000-4000-8000-000000000001', "_sluice_loaded_at" = '2026-12-01 10:00:00.500000+00'
         WHEN NOT MATCHED THEN INSERT ("id", "scope", "label", "count", "export_date", "_sluice_job_id", "_sluice_loaded_at") VALUES ("_sluice_dedup_0"."id", "_sluice_dedup_0"."scope", "_sluice_dedup_0"."label", "_sluice_dedup_0"."count", "_sluice_dedup_0"."export_date", '00000000-0000-4000-8000-000000000001', '2026-12-01 10:00:00.500000+00');

-- copy
COPY "_sluice_stage_0" ("id", "scope", "label", "count", "export_date", _sluice_ord) FROM 's3://bucket/sluice/sailthru.profile_geo/2026-12-01/00000000-0000-4000-8000-000000000001/t-0.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/sluice-load' FORMAT AS JSON 'auto' GZIP MANIFEST TIMEFORMAT 'auto' REGION 'us-east-1';

