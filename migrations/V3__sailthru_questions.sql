-- Views answering the questions of the Sailthru ingestion this connector replaces
-- (docs/sailthru.md, "Questions"), and the freshness of Sailthru data.

-- "How many total blasts have been sent?"
-- blast.id is the primary key, so count(*) counts distinct blasts. blasts_with_messages
-- counts blasts that have at least one message row (a blast may be in message_blast of an
-- export whose blast member was not loaded).
CREATE VIEW sailthru.q_total_blasts AS
SELECT (SELECT count(*) FROM sailthru.blast)                          AS total_blasts,
       (SELECT count(DISTINCT blast_id) FROM sailthru.message_blast)  AS blasts_with_messages;

-- "How many opens/clicks per blast?" One row per blast known from blast or message_blast,
-- zeros included. unique_* count messages (profiles) with at least one open/click.
CREATE VIEW sailthru.q_actions_per_blast AS
WITH ids AS (
    SELECT id AS blast_id FROM sailthru.blast
    UNION
    SELECT blast_id FROM sailthru.message_blast
), msgs AS (
    SELECT blast_id, count(*) AS messages
      FROM sailthru.message_blast
     GROUP BY blast_id
), acts AS (
    SELECT blast_id,
           count(*) FILTER (WHERE action = 'open')                         AS opens,
           count(*) FILTER (WHERE action = 'click')                        AS clicks,
           count(DISTINCT profile_id) FILTER (WHERE action = 'open')       AS unique_opens,
           count(DISTINCT profile_id) FILTER (WHERE action = 'click')      AS unique_clicks
      FROM sailthru.message_blast_action
     GROUP BY blast_id
)
SELECT ids.blast_id,
       b.name,
       b.day,
       coalesce(m.messages, 0)      AS messages,
       coalesce(a.opens, 0)         AS opens,
       coalesce(a.clicks, 0)        AS clicks,
       coalesce(a.unique_opens, 0)  AS unique_opens,
       coalesce(a.unique_clicks, 0) AS unique_clicks
  FROM ids
  LEFT JOIN sailthru.blast b ON b.id = ids.blast_id
  LEFT JOIN msgs m ON m.blast_id = ids.blast_id
  LEFT JOIN acts a ON a.blast_id = ids.blast_id;

-- The same question as one number each: the average over every blast (numeric, not the
-- integer division of the original query, and blasts without actions count as zero).
CREATE VIEW sailthru.q_actions_per_blast_avg AS
SELECT count(*)                                   AS blasts,
       coalesce(sum(opens), 0)                    AS opens,
       coalesce(sum(clicks), 0)                   AS clicks,
       round(avg(opens)::numeric, 2)              AS avg_opens_per_blast,
       round(avg(clicks)::numeric, 2)             AS avg_clicks_per_blast
  FROM sailthru.q_actions_per_blast;

-- "Which users have received more than 100 blasts?"
-- (blast_id, profile_id) is the primary key, so count(*) counts distinct blasts.
CREATE VIEW sailthru.q_profiles_over_100_blasts AS
SELECT profile_id,
       count(*) AS blasts_received
  FROM sailthru.message_blast
 GROUP BY profile_id
HAVING count(*) > 100;

-- "Which users have clicked more than 100 times across all blasts?"
CREATE VIEW sailthru.q_profiles_over_100_clicks AS
SELECT profile_id,
       count(*) AS clicks
  FROM sailthru.message_blast_action
 WHERE action = 'click'
 GROUP BY profile_id
HAVING count(*) > 100;

-- "The message_blast chart should have total_emails_clicked and total_emails_opened."
-- Per blast: an e-mail (one profile-blast message) opened or clicked several times counts
-- once. Join it to the chart on blast_id.
CREATE VIEW sailthru.q_message_blast_email_totals AS
SELECT m.blast_id,
       count(*)                                                    AS total_emails_sent,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM sailthru.message_blast_action a
            WHERE a.blast_id = m.blast_id AND a.profile_id = m.profile_id
              AND a.action = 'open'))                              AS total_emails_opened,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM sailthru.message_blast_action a
            WHERE a.blast_id = m.blast_id AND a.profile_id = m.profile_id
              AND a.action = 'click'))                             AS total_emails_clicked
  FROM sailthru.message_blast m
 GROUP BY m.blast_id;

-- Over all blasts: Postgres has no COUNT(DISTINCT a, b); count distinct pairs through a
-- DISTINCT subquery (or count(DISTINCT (a, b))). Actions whose message row is missing still count.
CREATE VIEW sailthru.q_email_totals AS
SELECT (SELECT count(*) FROM sailthru.message_blast)                        AS total_emails_sent,
       (SELECT count(*) FROM (SELECT DISTINCT blast_id, profile_id
                                FROM sailthru.message_blast_action
                               WHERE action = 'open') o)                    AS total_emails_opened,
       (SELECT count(*) FROM (SELECT DISTINCT blast_id, profile_id
                                FROM sailthru.message_blast_action
                               WHERE action = 'click') c)                   AS total_emails_clicked;

-- "The message_action chart should have total_historical_emails_sent and
-- total_historical_emails_opened." Per send day, with running totals over all history
-- loaded so far (every export is merged, so history accumulates without duplicates).
CREATE VIEW sailthru.q_email_history_daily AS
WITH per_message AS (
    SELECT m.send_time::date AS day,
           EXISTS (SELECT 1 FROM sailthru.message_blast_action a
                    WHERE a.blast_id = m.blast_id AND a.profile_id = m.profile_id
                      AND a.action = 'open') AS opened
      FROM sailthru.message_blast m
), per_day AS (
    SELECT day,
           count(*)                         AS emails_sent,
           count(*) FILTER (WHERE opened)   AS emails_opened
      FROM per_message
     GROUP BY day
)
SELECT day,
       emails_sent,
       emails_opened,
       sum(emails_sent)   OVER (ORDER BY day NULLS FIRST)::bigint AS total_historical_emails_sent,
       sum(emails_opened) OVER (ORDER BY day NULLS FIRST)::bigint AS total_historical_emails_opened
  FROM per_day;

-- The same per profile: e-mails (blast and transactional) sent and opened in the loaded
-- exports, next to Sailthru's own lifetime counters from the latest profile export
-- (total_messages, total_unique_opens), which also cover history older than any export.
CREATE VIEW sailthru.q_profile_email_history AS
WITH sent AS (
    SELECT profile_id,
           EXISTS (SELECT 1 FROM sailthru.message_blast_action a
                    WHERE a.blast_id = m.blast_id AND a.profile_id = m.profile_id
                      AND a.action = 'open') AS opened
      FROM sailthru.message_blast m
    UNION ALL
    SELECT profile_id,
           EXISTS (SELECT 1 FROM sailthru.message_transactional_action a
                    WHERE a.message_id = t.id AND a.action = 'open') AS opened
      FROM sailthru.message_transactional t
), per_profile AS (
    SELECT profile_id,
           count(*)                       AS emails_sent,
           count(*) FILTER (WHERE opened) AS emails_opened
      FROM sent
     WHERE profile_id IS NOT NULL
     GROUP BY profile_id
)
SELECT coalesce(pp.profile_id, p.id)          AS profile_id,
       coalesce(pp.emails_sent, 0)            AS total_historical_emails_sent,
       coalesce(pp.emails_opened, 0)          AS total_historical_emails_opened,
       p.total_messages                       AS sailthru_total_messages,
       p.total_unique_opens                   AS sailthru_total_unique_opens,
       p.export_date                          AS profile_export_date
  FROM per_profile pp
  FULL JOIN sailthru.profile p ON p.id = pp.profile_id;

-- "A message_blast record is sent again when a user opens/clicks days later: duplicates."
-- The loader merges on the primary keys (message_blast: blast_id, profile_id; actions: the
-- whole action), so a re-sent message replaces its row and adds only its new actions. This
-- view lists messages whose latest export came more than a day after their send, i.e. the
-- ones Sailthru re-sent, to see that each is still a single row.
CREATE VIEW sailthru.q_resent_messages AS
SELECT m.blast_id,
       m.profile_id,
       m.send_time,
       m.export_date,
       (SELECT count(*) FROM sailthru.message_blast_action a
         WHERE a.blast_id = m.blast_id AND a.profile_id = m.profile_id) AS actions
  FROM sailthru.message_blast m
 WHERE m.export_date > m.send_time::date + 1;

-- "The stakeholder is not sure she is looking at up-to-date data."
-- sluice writes a freshness row per stream when a job succeeds: source_ts is the export's
-- date (midnight UTC of the member name's date), loaded_at when the load finished.
CREATE VIEW sailthru.freshness AS
SELECT account, stream, source_ts, loaded_at, job_id
  FROM sluice.freshness
 WHERE connector = 'sailthru';

-- One row per account and stream: the latest export loaded and when, for a dashboard tile.
CREATE VIEW sailthru.q_freshness AS
SELECT account,
       stream,
       (max(source_ts) AT TIME ZONE 'UTC')::date AS latest_export_date,
       max(loaded_at)              AS last_loaded_at,
       now() - max(loaded_at)      AS since_last_load
  FROM sailthru.freshness
 GROUP BY account, stream;

-- The same from the data itself: the newest export_date present in each table.
CREATE VIEW sailthru.q_latest_export_per_table AS
SELECT 'blast' AS table_name, max(export_date) AS latest_export_date, count(*) AS rows FROM sailthru.blast
UNION ALL
SELECT 'message_blast', max(export_date), count(*) FROM sailthru.message_blast
UNION ALL
SELECT 'message_transactional', max(export_date), count(*) FROM sailthru.message_transactional
UNION ALL
SELECT 'profile', max(export_date), count(*) FROM sailthru.profile;
