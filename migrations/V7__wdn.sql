-- What Drops Now (connector `wdn`, docs/wdn.md): the catalogue API's brands, products,
-- offers and retailers, and the original ETL's retailer analysis as a view. Ids are text
-- (the API's ids are strings). Every table keeps the whole resource as jsonb. Offers point
-- at products and retailers by id without foreign keys: Redshift does not enforce them,
-- an offer may name a retailer that answers 404, and tasks load in any order.
CREATE SCHEMA IF NOT EXISTS wdn;

-- GET /searches/brand_search?q= (the brand of exactly the name asked for)
CREATE TABLE wdn.brands (
    id                text PRIMARY KEY,
    name              text,
    description       text,
    website           text,
    resource          jsonb NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /brands/{id}/products. brand_names: the names as JSON text (`["Nike","Converse"]`),
-- which SQL on Postgres and Redshift alike can LIKE, and as an array (jsonb; SUPER on
-- Redshift).
CREATE TABLE wdn.products (
    id                text PRIMARY KEY,
    name              text,
    description       text,
    release_at        timestamptz,
    brand_names       text,
    brand_names_array jsonb,
    resource          jsonb NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /products/{id}/offers, replaced per product (an offer gone from its product's list
-- is deleted). Prices exactly as sent (numbers or numeric strings).
CREATE TABLE wdn.offers (
    id                text PRIMARY KEY,
    product_id        text NOT NULL,
    retailer_id       text NOT NULL,
    original_currency text,
    price_usd         numeric,
    price_gbp         numeric,
    price_eur         numeric,
    resource          jsonb NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX offers_product ON wdn.offers (product_id);
CREATE INDEX offers_retailer ON wdn.offers (retailer_id);

-- GET /retailers/{id}
CREATE TABLE wdn.retailers (
    id                text PRIMARY KEY,
    name              text,
    website           text,
    resource          jsonb NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- The original's sql.py: retailers by the average USD price of their offers of Nike,
-- Adidas and Vans products (brand_names matched case-insensitively, as its
-- lower(brand_names) did), segment "Normal" below 100 and "High End" from 100 to 200
-- inclusive (others dropped), ranked within the segment by that average, highest first,
-- rounded to 2 places; ordered by segment and rank. SQL that Redshift runs as well
-- (migrations/redshift/wdn_views.sql is the same view).
CREATE VIEW wdn.retailer_price_segments AS
WITH averages AS (
    SELECT r.id AS retailer_id,
           r.name AS retailer_name,
           AVG(o.price_usd) AS avg_price_usd,
           COUNT(*) AS offers
      FROM wdn.offers o
      JOIN wdn.retailers r ON r.id = o.retailer_id
      JOIN wdn.products p ON p.id = o.product_id
     WHERE o.price_usd IS NOT NULL
       AND (LOWER(p.brand_names) LIKE '%nike%'
            OR LOWER(p.brand_names) LIKE '%adidas%'
            OR LOWER(p.brand_names) LIKE '%vans%')
     GROUP BY r.id, r.name
), segmented AS (
    SELECT retailer_id, retailer_name, avg_price_usd, offers,
           CASE WHEN avg_price_usd < 100 THEN 'Normal'
                WHEN avg_price_usd <= 200 THEN 'High End'
           END AS segment
      FROM averages
)
SELECT segment,
       RANK() OVER (PARTITION BY segment ORDER BY avg_price_usd DESC) AS rank,
       retailer_id,
       retailer_name,
       ROUND(avg_price_usd, 2) AS avg_price_usd,
       offers
  FROM segmented
 WHERE segment IS NOT NULL
 ORDER BY segment, rank, retailer_id;
