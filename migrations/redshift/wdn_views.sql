-- WDN's analysis view on Redshift: the view of migrations/V7__wdn.sql, which both speak.
-- The original's sql.py: retailers by the average USD price of their offers of Nike,
-- Adidas and Vans products (brand_names matched case-insensitively, as its
-- lower(brand_names) did), segment "Normal" below 100 and "High End" from 100 to 200
-- inclusive (others dropped), ranked within the segment by that average, highest first,
-- rounded to 2 places; ordered by segment and rank. SQL that Redshift runs as well
-- (migrations/redshift/wdn_views.sql is the same view).
CREATE OR REPLACE VIEW wdn.retailer_price_segments AS
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
