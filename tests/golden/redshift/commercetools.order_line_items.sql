-- table (Redshift)
CREATE TABLE IF NOT EXISTS "commercetools"."order_line_items" (
    "order_id" VARCHAR(65535) NOT NULL,
    "line_item_id" VARCHAR(65535) NOT NULL,
    "version" BIGINT NOT NULL,
    "kind" VARCHAR(65535) NOT NULL,
    "product_id" VARCHAR(65535),
    "sku" VARCHAR(65535),
    "name" VARCHAR(65535),
    "quantity" BIGINT,
    "price_cent_amount" BIGINT,
    "total_cent_amount" BIGINT,
    "fraction_digits" INTEGER,
    "currency" VARCHAR(65535),
    "line_item" SUPER NOT NULL,
    "_sluice_job_id" CHAR(36) NOT NULL,
    "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("order_id", "line_item_id")
);

-- table (stand-in)
CREATE TABLE IF NOT EXISTS "commercetools"."order_line_items" (
    "order_id" VARCHAR(65535) NOT NULL,
    "line_item_id" VARCHAR(65535) NOT NULL,
    "version" BIGINT NOT NULL,
    "kind" VARCHAR(65535) NOT NULL,
    "product_id" VARCHAR(65535),
    "sku" VARCHAR(65535),
    "name" VARCHAR(65535),
    "quantity" BIGINT,
    "price_cent_amount" BIGINT,
    "total_cent_amount" BIGINT,
    "fraction_digits" INTEGER,
    "currency" VARCHAR(65535),
    "line_item" SUPER NOT NULL,
    "_sluice_job_id" CHAR(36) NOT NULL,
    "_sluice_loaded_at" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("order_id", "line_item_id")
);

-- stage
CREATE TEMP TABLE "_sluice_stage_0" ("order_id" VARCHAR(65535), "line_item_id" VARCHAR(65535), "version" BIGINT, "kind" VARCHAR(65535), "product_id" VARCHAR(65535), "sku" VARCHAR(65535), "name" VARCHAR(65535), "quantity" BIGINT, "price_cent_amount" BIGINT, "total_cent_amount" BIGINT, "fraction_digits" INTEGER, "currency" VARCHAR(65535), "line_item" SUPER, _sluice_ord BIGINT);

-- replace scope
DELETE FROM "commercetools"."order_line_items" WHERE (("commercetools"."order_line_items"."order_id" = '92f5a867-bf19-47ab-982c-6720a03a3921')) AND NOT EXISTS (SELECT 1 FROM "_sluice_stage_0" WHERE "_sluice_stage_0"."order_id" = "commercetools"."order_line_items"."order_id" AND "_sluice_stage_0"."line_item_id" = "commercetools"."order_line_items"."line_item_id");

-- dedupe
CREATE TEMP TABLE "_sluice_dedup_0" AS SELECT "order_id", "line_item_id", "version", "kind", "product_id", "sku", "name", "quantity", "price_cent_amount", "total_cent_amount", "fraction_digits", "currency", "line_item", _sluice_ord FROM (SELECT "order_id", "line_item_id", "version", "kind", "product_id", "sku", "name", "quantity", "price_cent_amount", "total_cent_amount", "fraction_digits", "currency", "line_item", _sluice_ord, ROW_NUMBER() OVER (PARTITION BY "order_id", "line_item_id" ORDER BY "version" DESC, _sluice_ord DESC) AS _sluice_rn
               FROM (SELECT "order_id", "line_item_id", "version", "kind", "product_id", "sku", "name", "quantity", "price_cent_amount", "total_cent_amount", "fraction_digits", "currency", "line_item", _sluice_ord, ROW_NUMBER() OVER (PARTITION BY _sluice_ord / 4294967296, "order_id", "line_item_id" ORDER BY _sluice_ord DESC) AS _sluice_last
                       FROM "_sluice_stage_0") w
              WHERE _sluice_last = 1) x WHERE _sluice_rn = 1;

-- parent guard
DELETE FROM "_sluice_dedup_0" WHERE EXISTS (SELECT 1 FROM "commercetools"."order_line_items" WHERE "commercetools"."order_line_items"."order_id" = "_sluice_dedup_0"."order_id" AND "commercetools"."order_line_items"."version" > "_sluice_dedup_0"."version");

-- stale rows
DELETE FROM "_sluice_dedup_0" USING "commercetools"."order_line_items" WHERE "commercetools"."order_line_items"."order_id" = "_sluice_dedup_0"."order_id" AND "commercetools"."order_line_items"."line_item_id" = "_sluice_dedup_0"."line_item_id" AND ("commercetools"."order_line_items"."version" > "_sluice_dedup_0"."version" OR (("commercetools"."order_line_items"."version" = "_sluice_dedup_0"."version" OR ("commercetools"."order_line_items"."version" IS NULL AND "_sluice_dedup_0"."version" IS NULL)) AND ("commercetools"."order_line_items"."kind" = "_sluice_dedup_0"."kind" OR ("commercetools"."order_line_items"."kind" IS NULL AND "_sluice_dedup_0"."kind" IS NULL)) AND ("commercetools"."order_line_items"."product_id" = "_sluice_dedup_0"."product_id" OR ("commercetools"."order_line_items"."product_id" IS NULL AND "_sluice_dedup_0"."product_id" IS NULL)) AND ("commercetools"."order_line_items"."sku" = "_sluice_dedup_0"."sku" OR ("commercetools"."order_line_items"."sku" IS NULL AND "_sluice_dedup_0"."sku" IS NULL)) AND ("commercetools"."order_line_items"."name" = "_sluice_dedup_0"."name" OR ("commercetools"."order_line_items"."name" IS NULL AND "_sluice_dedup_0"."name" IS NULL)) AND ("commercetools"."order_line_items"."quantity" = "_sluice_dedup_0"."quantity" OR ("commercetools"."order_line_items"."quantity" IS NULL AND "_sluice_dedup_0"."quantity" IS NULL)) AND ("commercetools"."order_line_items"."price_cent_amount" = "_sluice_dedup_0"."price_cent_amount" OR ("commercetools"."order_line_items"."price_cent_amount" IS NULL AND "_sluice_dedup_0"."price_cent_amount" IS NULL)) AND ("commercetools"."order_line_items"."total_cent_amount" = "_sluice_dedup_0"."total_cent_amount" OR ("commercetools"."order_line_items"."total_cent_amount" IS NULL AND "_sluice_dedup_0"."total_cent_amount" IS NULL)) AND ("commercetools"."order_line_items"."fraction_digits" = "_sluice_dedup_0"."fraction_digits" OR ("commercetools"."order_line_items"."fraction_digits" IS NULL AND "_sluice_dedup_0"."fraction_digits" IS NULL)) AND ("commercetools"."order_line_items"."currency" = "_sluice_dedup_0"."currency" OR ("commercetools"."order_line_items"."currency" IS NULL AND "_sluice_dedup_0"."currency" IS NULL)) AND (JSON_SERIALIZE("commercetools"."order_line_items"."line_item") = JSON_SERIALIZE("_sluice_dedup_0"."line_item") OR ("commercetools"."order_line_items"."line_item" IS NULL AND "_sluice_dedup_0"."line_item" IS NULL))));

-- merge
MERGE INTO "commercetools"."order_line_items" USING "_sluice_dedup_0" ON "commercetools"."order_line_items"."order_id" = "_sluice_dedup_0"."order_id" AND "commercetools"."order_line_items"."line_item_id" = "_sluice_dedup_0"."line_item_id"
         WHEN MATCHED THEN UPDATE SET "version" = "_sluice_dedup_0"."version", "kind" = "_sluice_dedup_0"."kind", "product_id" = "_sluice_dedup_0"."product_id", "sku" = "_sluice_dedup_0"."sku", "name" = "_sluice_dedup_0"."name", "quantity" = "_sluice_dedup_0"."quantity", "price_cent_amount" = "_sluice_dedup_0"."price_cent_amount", "total_cent_amount" = "_sluice_dedup_0"."total_cent_amount", "fraction_digits" = "_sluice_dedup_0"."fraction_digits", "currency" = "_sluice_dedup_0"."currency", "line_item" = "_sluice_dedup_0"."line_item", "_sluice_job_id" = '00000000-0000-4000-8000-000000000001', "_sluice_loaded_at" = '2026-12-01 10:00:00.500000+00'
         WHEN NOT MATCHED THEN INSERT ("order_id", "line_item_id", "version", "kind", "product_id", "sku", "name", "quantity", "price_cent_amount", "total_cent_amount", "fraction_digits", "currency", "line_item", "_sluice_job_id", "_sluice_loaded_at") VALUES ("_sluice_dedup_0"."order_id", "_sluice_dedup_0"."line_item_id", "_sluice_dedup_0"."version", "_sluice_dedup_0"."kind", "_sluice_dedup_0"."product_id", "_sluice_dedup_0"."sku", "_sluice_dedup_0"."name", "_sluice_dedup_0"."quantity", "_sluice_dedup_0"."price_cent_amount", "_sluice_dedup_0"."total_cent_amount", "_sluice_dedup_0"."fraction_digits", "_sluice_dedup_0"."currency", "_sluice_dedup_0"."line_item", '00000000-0000-4000-8000-000000000001', '2026-12-01 10:00:00.500000+00');

-- copy
COPY "_sluice_stage_0" ("order_id", "line_item_id", "version", "kind", "product_id", "sku", "name", "quantity", "price_cent_amount", "total_cent_amount", "fraction_digits", "currency", "line_item", _sluice_ord) FROM 's3://bucket/sluice/commercetools.order_line_items/2026-12-01/00000000-0000-4000-8000-000000000001/t-0.manifest' IAM_ROLE 'arn:aws:iam::123456789012:role/sluice-load' FORMAT AS JSON 'auto' GZIP MANIFEST TIMEFORMAT 'auto' REGION 'us-east-1';

