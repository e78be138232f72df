//! Event bulk create jobs shared by the event writes in flight of one destination.
//!
//! A part of orders maps to a few hundred events, and the loader writes parts as they
//! come, several at once; one job per part would leave most jobs well short of Klaviyo's
//! 1,000 events while the endpoint's rate limit (tier M: 10/s, 150/min) is what holds the
//! push back. So every write hands its events to [`EventJobs`], and one sender takes a
//! place in the endpoint's rate limit *first* and only then fills a job (up to
//! [`MAX_EVENTS_PER_JOB`] events and [`MAX_JOB_BYTES`]) with the events waiting by then,
//! from as many writes as it takes. Nothing waits when the limit has room: a job goes out
//! with whatever is there as soon as a place is free; when it has none, the events
//! gathered meanwhile fill the next job.
//!
//! Each write gets back the events Klaviyo refused (by `source.pointer`, isolated as
//! [`post_isolating`] does) once every job carrying one of its events is answered, or the
//! first error of those jobs — the loader then writes its part again, which is harmless:
//! Klaviyo drops an event whose `unique_id` it has.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sluice_store::StoreError;
use tokio::sync::oneshot;

use super::service::{Call, Service, Turn};
use super::sink::{BuildBody, MAX_EVENTS_PER_JOB, MAX_JOB_BYTES, post_isolating};

/// The endpoint.
const PATH: &str = "/api/event-bulk-create-jobs";

/// One event ready for a job.
#[derive(Debug, Clone)]
pub(super) struct Event {
    /// The writer's index of it, handed back with a refusal.
    pub origin: usize,
    /// Its profile as JSON text: events of one profile share an element of the job.
    pub key: String,
    /// `profile.data` of its element.
    pub profile: Value,
    /// `{type: "event", attributes}` without the profile.
    pub resource: Value,
}

impl Event {
    /// Bytes it adds to a job's body: counted as if alone in its element (its profile and
    /// the element around them), an overestimate when events share a profile, never under.
    fn bytes(&self) -> usize {
        self.key.len() + self.resource.to_string().len() + 96 + 1
    }
}

/// Refused events (`origin`, why), or the error of a job carrying some of them.
type Outcome = Result<Vec<(usize, String)>, StoreError>;

/// What one write handed over, and how far its events went.
struct Contribution {
    events: Vec<Event>,
    state: Mutex<Progress>,
}

struct Progress {
    /// Events not yet put in a job.
    unsent: usize,
    /// Jobs carrying some of its events, not yet answered.
    in_flight: usize,
    refused: Vec<(usize, String)>,
    error: Option<StoreError>,
    done: Option<oneshot::Sender<Outcome>>,
}

impl Contribution {
    /// Records a job's answer for its events; answers the writer after the last one.
    fn answered(&self, refused: Vec<(usize, String)>, error: Option<&StoreError>) {
        let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
        p.in_flight = p.in_flight.saturating_sub(1);
        p.refused.extend(refused);
        if let Some(e) = error
            && p.error.is_none()
        {
            p.error = Some(copy_error(e));
        }
        if p.unsent == 0 && p.in_flight == 0 {
            let outcome = match p.error.take() {
                Some(e) => Err(e),
                None => Ok(std::mem::take(&mut p.refused)),
            };
            if let Some(done) = p.done.take() {
                // The writer may have gone (its part failed elsewhere): nothing to tell.
                let _ = done.send(outcome);
            }
        }
    }
}

/// The same error for every writer whose events were in the job.
fn copy_error(e: &StoreError) -> StoreError {
    StoreError::Destination {
        message: e.to_string(),
        transient: e.is_transient(),
    }
}

/// Events waiting for a job: contributions in arrival order, with the index of the first
/// event of each not yet taken.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<(Arc<Contribution>, usize)>,
    /// Whether a sender is running (at most one: it takes the places in turn).
    sending: bool,
}

/// A slice of one contribution's events in a job.
type Slice = (Arc<Contribution>, std::ops::Range<usize>);

/// The event jobs of one destination (see the module docs).
pub(super) struct EventJobs {
    service: Arc<Service>,
    queue: Mutex<Queue>,
}

impl EventJobs {
    pub(super) fn new(service: Arc<Service>) -> Self {
        Self {
            service,
            queue: Mutex::new(Queue::default()),
        }
    }

    /// Sends `events` (sorted by profile, so a write alone makes the same jobs as before
    /// any sharing) in jobs shared with the other writes in flight; the events refused,
    /// by `origin`, with Klaviyo's reason.
    ///
    /// # Errors
    /// The first error of a job that carried some of them (transient ones retried by the
    /// loader).
    pub(super) async fn write(self: &Arc<Self>, events: Vec<Event>) -> Outcome {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (done, answer) = oneshot::channel();
        let contribution = Arc::new(Contribution {
            state: Mutex::new(Progress {
                unsent: events.len(),
                in_flight: 0,
                refused: Vec::new(),
                error: None,
                done: Some(done),
            }),
            events,
        });
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.waiting.push_back((contribution, 0));
            !std::mem::replace(&mut q.sending, true)
        };
        if start {
            // A task of its own: the sender serves every writer, so it must not end with
            // the write that happened to start it.
            tokio::spawn(self.clone().send_all());
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Destination {
                message: "the event bulk job carrying these events was dropped unanswered".into(),
                transient: true,
            })
        })
    }

    /// Takes a place in the rate limit, fills a job with what waits by then, sends it
    /// (without waiting for the answer), and again while events wait.
    async fn send_all(self: Arc<Self>) {
        let call = Call::create_event_bulk_job();
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.waiting.is_empty() {
                    q.sending = false;
                    return;
                }
            }
            let turn = self.service.turn(&call).await;
            let job = self.take_job();
            tokio::spawn(self.clone().send_job(turn, job));
        }
    }

    /// The next job's events from the front of the queue: at most [`MAX_EVENTS_PER_JOB`]
    /// and [`MAX_JOB_BYTES`] (at least one event).
    fn take_job(&self) -> Vec<Slice> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let (mut count, mut bytes) = (0usize, 0usize);
        let mut job: Vec<Slice> = Vec::new();
        while let Some((contribution, from)) = q.waiting.front_mut() {
            let mut to = *from;
            while to < contribution.events.len() {
                let b = contribution.events[to].bytes();
                if count > 0 && (count >= MAX_EVENTS_PER_JOB || bytes + b > MAX_JOB_BYTES) {
                    break;
                }
                count += 1;
                bytes += b;
                to += 1;
            }
            if to > *from {
                let mut p = contribution.state.lock().unwrap_or_else(|e| e.into_inner());
                p.unsent -= to - *from;
                p.in_flight += 1;
                drop(p);
                job.push((contribution.clone(), *from..to));
            }
            if to < contribution.events.len() {
                *from = to;
                break;
            }
            q.waiting.pop_front();
        }
        job
    }

    /// Sends one job and hands each writer its part of the answer.
    async fn send_job(self: Arc<Self>, turn: Turn, job: Vec<Slice>) {
        // Every event of the job, by profile (stable: each writer's order is kept), each
        // with the slice it came from.
        let mut events: Vec<(usize, &Event)> = job
            .iter()
            .enumerate()
            .flat_map(|(s, (c, range))| c.events[range.clone()].iter().map(move |e| (s, e)))
            .collect();
        events.sort_by(|a, b| a.1.key.cmp(&b.1.key));
        let build = |batch: &[usize]| job_body(&events, batch);
        let positions: Vec<usize> = (0..events.len()).collect();
        let call = Call::create_event_bulk_job();
        let result = post_isolating(
            &self.service,
            Some(turn),
            &call,
            PATH,
            positions,
            &build as &BuildBody<'_>,
        )
        .await;
        let mut refused: Vec<Vec<(usize, String)>> = job.iter().map(|_| Vec::new()).collect();
        let error = match result {
            // 202 with no body: nothing to poll.
            Ok((_, r)) => {
                for (p, why) in r {
                    let (s, e) = events[p];
                    refused[s].push((e.origin, why));
                }
                None
            }
            Err(e) => Some(e),
        };
        for ((contribution, _), refused) in job.iter().zip(refused) {
            contribution.answered(refused, error.as_ref());
        }
    }
}

/// A job's body for `batch` (positions into `events`, which are sorted by profile): one
/// element per run of events of one profile, and the positions each element carries.
fn job_body(events: &[(usize, &Event)], batch: &[usize]) -> (Value, Vec<Vec<usize>>) {
    let mut data: Vec<Value> = Vec::new();
    let mut layout: Vec<Vec<usize>> = Vec::new();
    let mut group: Vec<Value> = Vec::new();
    let mut current: Option<&Event> = None;
    for &p in batch {
        let event = events[p].1;
        if current.is_none_or(|c| c.key != event.key) {
            if let Some(c) = current {
                data.push(element(c, std::mem::take(&mut group)));
            }
            layout.push(Vec::new());
            current = Some(event);
        }
        group.push(event.resource.clone());
        if let Some(last) = layout.last_mut() {
            last.push(p);
        }
    }
    if let Some(c) = current {
        data.push(element(c, group));
    }
    (
        json!({"data": {"type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": data}}}}),
        layout,
    )
}

/// One element of a job: a profile and its events.
fn element(first: &Event, events: Vec<Value>) -> Value {
    json!({"type": "event-bulk-create", "attributes": {
        "profile": {"data": first.profile}, "events": {"data": events}}})
}
