//! A served project: per resource type, the ids and times of every resource in sorted
//! indexes (built once), with bodies generated on demand (or stored, for the example
//! project), the query executor, reference expansion, custom objects and touches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::data::{Gen, Kind, fmt_ms};
use super::query::{Cmp, Dir, Field, Lit, Pred, Row};
use super::{CommercetoolsDataSpec, InvalidConfig, Resource, valid_project_key};
use crate::faults::h3;

/// Where `with a where`-totals stop counting, as commercetools' approximate totals do.
const TOTAL_CAP: u64 = 10_000;

/// The ids, times and versions of one resource type, and its sorted indexes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Collection {
    ids: Vec<String>,
    created: Vec<i64>,
    modified: Vec<i64>,
    version: Vec<u64>,
    published: Vec<bool>,
    touched: Vec<bool>,
    by_id: Vec<u32>,
    by_created: Vec<u32>,
    by_modified: Vec<u32>,
    /// Stored bodies (example project, custom objects); empty when generated.
    bodies: Vec<Value>,
}

impl Collection {
    fn build(&mut self) {
        let n = self.ids.len() as u32;
        let mut by_id: Vec<u32> = (0..n).collect();
        by_id.sort_unstable_by(|a, b| self.ids[*a as usize].cmp(&self.ids[*b as usize]));
        let mut by_created: Vec<u32> = (0..n).collect();
        by_created.sort_by(|a, b| {
            (self.created[*a as usize], &self.ids[*a as usize])
                .cmp(&(self.created[*b as usize], &self.ids[*b as usize]))
        });
        self.by_id = by_id;
        self.by_created = by_created;
        self.touched.resize(n as usize, false);
        self.build_modified();
    }

    fn build_modified(&mut self) {
        let mut by_modified: Vec<u32> = (0..self.ids.len() as u32).collect();
        by_modified.sort_by(|a, b| {
            (self.modified[*a as usize], &self.ids[*a as usize])
                .cmp(&(self.modified[*b as usize], &self.ids[*b as usize]))
        });
        self.by_modified = by_modified;
    }

    fn generated(g: &Gen, kind: Kind, published: impl Fn(u64) -> bool) -> Collection {
        let n = g.count(kind);
        let mut c = Collection::default();
        for i in 0..n {
            c.ids.push(g.id(kind, i));
            c.created.push(g.created(kind, i));
            let (m, v) = g.modified(kind, i);
            c.modified.push(m);
            c.version.push(v);
            c.published.push(published(i));
        }
        c.build();
        c
    }

    /// A collection of stored bodies (each with `id`, `version`, `createdAt`,
    /// `lastModifiedAt`; `published` from `published` or `masterData.published`, else true).
    pub(crate) fn stored(bodies: Vec<Value>) -> Result<Collection, String> {
        let mut c = Collection::default();
        for b in &bodies {
            let id = b["id"]
                .as_str()
                .ok_or_else(|| format!("a resource without a string id: {b}"))?;
            let time = |k: &str| {
                b[k].as_str()
                    .and_then(super::query::parse_time)
                    .ok_or_else(|| format!("resource {id}: no valid {k}"))
            };
            c.created.push(time("createdAt")?);
            c.modified.push(time("lastModifiedAt")?);
            c.ids.push(id.to_owned());
            c.version.push(b["version"].as_u64().unwrap_or(1));
            c.published.push(
                b["published"]
                    .as_bool()
                    .or(b["masterData"]["published"].as_bool())
                    .unwrap_or(true),
            );
        }
        c.bodies = bodies;
        c.build();
        Ok(c)
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn index_of(&self, id: &str) -> Option<u32> {
        let k = self
            .by_id
            .partition_point(|i| self.ids[*i as usize].as_str() < id);
        self.by_id
            .get(k)
            .copied()
            .filter(|i| self.ids[*i as usize] == id)
    }

    fn row(&self, i: u32) -> Row<'_> {
        let i = i as usize;
        Row {
            id: &self.ids[i],
            created: self.created[i],
            modified: self.modified[i],
            published: self.published[i],
        }
    }

    /// The stored body of `i`, with the version and time of a touch.
    fn stored_body(&self, i: u32) -> Value {
        let i = i as usize;
        let mut b = self.bodies[i].clone();
        if self.touched[i] {
            b["version"] = json!(self.version[i]);
            b["lastModifiedAt"] = json!(fmt_ms(self.modified[i]));
        }
        b
    }

    /// The indices of a page and the total. `published_only`: leave out unpublished ones.
    pub(crate) fn run(&self, q: &PageQuery, published_only: bool) -> (Vec<u32>, Option<u64>) {
        let (field, dir) = q
            .sort
            .first()
            .copied()
            .unwrap_or((Field::CreatedAt, Dir::Asc));
        let order: &[u32] = match field {
            Field::Id => &self.by_id,
            Field::CreatedAt => &self.by_created,
            Field::LastModifiedAt => &self.by_modified,
        };
        // Narrow the primary index to the range the top-level conjuncts allow.
        let (mut lo, mut hi) = (0usize, order.len());
        if let Some(p) = &q.pred {
            for c in p.conjuncts() {
                let Pred::Cmp(f, cmp, lit) = c else { continue };
                if *f != field {
                    continue;
                }
                // `below(k)`: the key of order[k] is below the literal (or ≤ when `eq`).
                let below = |k: usize, or_equal: bool| -> bool {
                    let i = order[k] as usize;
                    let o = match (f, lit) {
                        (Field::Id, Lit::Str(s)) => self.ids[i].as_str().cmp(s.as_str()),
                        (Field::CreatedAt, Lit::Time(t)) => self.created[i].cmp(t),
                        (Field::LastModifiedAt, Lit::Time(t)) => self.modified[i].cmp(t),
                        _ => return false,
                    };
                    o.is_lt() || (or_equal && o.is_eq())
                };
                let cut = |or_equal: bool| {
                    let (mut a, mut b) = (0usize, order.len());
                    while a < b {
                        let m = (a + b) / 2;
                        if below(m, or_equal) {
                            a = m + 1;
                        } else {
                            b = m;
                        }
                    }
                    a
                };
                match cmp {
                    Cmp::Gt => lo = lo.max(cut(true)),
                    Cmp::Ge => lo = lo.max(cut(false)),
                    Cmp::Lt => hi = hi.min(cut(false)),
                    Cmp::Le => hi = hi.min(cut(true)),
                    Cmp::Eq => {
                        lo = lo.max(cut(false));
                        hi = hi.min(cut(true));
                    }
                    Cmp::Ne => {}
                }
            }
        }
        let slice = if lo < hi { &order[lo..hi] } else { &[][..] };
        let key = |i: u32| -> (i64, &str) {
            let i = i as usize;
            match field {
                Field::Id => (0, self.ids[i].as_str()),
                Field::CreatedAt => (self.created[i], ""),
                Field::LastModifiedAt => (self.modified[i], ""),
            }
        };
        let rest = &q.sort[q.sort.len().min(1)..];
        let mut page = Vec::new();
        let mut matched = 0u64;
        let mut group: Vec<u32> = Vec::new();
        let flush = |group: &mut Vec<u32>, page: &mut Vec<u32>, matched: &mut u64| {
            if !rest.is_empty() {
                group.sort_by(|a, b| self.compare(*a, *b, rest));
            }
            for i in group.drain(..) {
                *matched += 1;
                if *matched > q.offset && page.len() < q.limit {
                    page.push(i);
                }
            }
        };
        let iter: Box<dyn Iterator<Item = &u32>> = match dir {
            Dir::Asc => Box::new(slice.iter()),
            Dir::Desc => Box::new(slice.iter().rev()),
        };
        for &i in iter {
            if published_only && !self.published[i as usize] {
                continue;
            }
            if let Some(p) = &q.pred
                && !p.matches(&self.row(i))
            {
                continue;
            }
            if group.first().is_some_and(|g| key(*g) != key(i)) {
                flush(&mut group, &mut page, &mut matched);
                if !q.with_total && page.len() >= q.limit {
                    group.clear();
                    break;
                }
            }
            group.push(i);
        }
        flush(&mut group, &mut page, &mut matched);
        let total = q.with_total.then(|| {
            if q.pred.is_some() {
                matched.min(TOTAL_CAP)
            } else {
                matched
            }
        });
        (page, total)
    }

    fn compare(&self, a: u32, b: u32, sort: &[(Field, Dir)]) -> std::cmp::Ordering {
        let (a, b) = (a as usize, b as usize);
        for (f, d) in sort {
            let o = match f {
                Field::Id => self.ids[a].cmp(&self.ids[b]),
                Field::CreatedAt => self.created[a].cmp(&self.created[b]),
                Field::LastModifiedAt => self.modified[a].cmp(&self.modified[b]),
            };
            let o = if *d == Dir::Desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        self.ids[a].cmp(&self.ids[b])
    }
}

/// A decoded paged query.
#[derive(Clone, Debug)]
pub(crate) struct PageQuery {
    pub pred: Option<Pred>,
    pub sort: Vec<(Field, Dir)>,
    pub limit: usize,
    pub offset: u64,
    pub with_total: bool,
}

/// One segment of an expansion path: `name`, `name[*]` or `name[3]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seg {
    name: String,
    index: Option<Option<usize>>,
}

/// Parses `a.b[*].c` into segments; `None` when malformed.
pub(crate) fn parse_expand(path: &str) -> Option<Vec<Seg>> {
    path.split('.')
        .map(|s| {
            let s = s.trim();
            if let Some((name, rest)) = s.split_once('[') {
                let inner = rest.strip_suffix(']')?;
                let index = if inner == "*" {
                    None
                } else {
                    Some(inner.parse().ok()?)
                };
                (!name.is_empty()).then(|| Seg {
                    name: name.to_owned(),
                    index: Some(index),
                })
            } else {
                (!s.is_empty()).then(|| Seg {
                    name: s.to_owned(),
                    index: None,
                })
            }
        })
        .collect()
}

/// How the bodies of the project are made.
#[derive(Clone, Debug)]
enum Source {
    Generated(Box<Gen>),
    Examples {
        /// Single-resource examples by `(resource, id)`, answered by `GET …/{id}`.
        singles: HashMap<(Resource, String), Value>,
    },
}

/// A served project (generated or the examples), usable without the server as the ground
/// truth of what it serves.
#[derive(Clone, Debug)]
pub struct Project {
    key: String,
    source: Source,
    /// Customers, orders, categories, products, product projections (examples only; the
    /// generated projections are the products').
    cols: Vec<Collection>,
    /// Generated categories: parent indices.
    parents: Vec<Option<u32>>,
    /// Touch calls so far, per resource.
    rounds: [u64; 5],
    /// Custom objects by `(container, key)`.
    custom: BTreeMap<(String, String), Value>,
    custom_seq: u64,
    /// JSON merge patches over served bodies, by `(slot, index)` (see [`Project::patch`]).
    patches: BTreeMap<(usize, u32), serde_json::Map<String, Value>>,
}

fn slot(r: Resource) -> usize {
    match r {
        Resource::Customers => 0,
        Resource::Orders => 1,
        Resource::Categories => 2,
        Resource::Products => 3,
        Resource::ProductProjections => 4,
    }
}

/// Why a custom-object operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CustomObjectError {
    /// 404.
    NotFound,
    /// 409, with the current version (when the object exists).
    Conflict(Option<u64>),
}

impl Project {
    /// The generated project `key` of `spec`.
    pub fn generate(key: &str, spec: &CommercetoolsDataSpec) -> Result<Project, InvalidConfig> {
        spec.validate()?;
        valid_project_key(key)?;
        let g = Gen::new(spec);
        let all = |_| true;
        let cols = vec![
            Collection::generated(&g, Kind::Customer, all),
            Collection::generated(&g, Kind::Order, all),
            Collection::generated(&g, Kind::Category, all),
            Collection::generated(&g, Kind::Product, |i| g.product_flags(i).0),
            Collection::default(),
        ];
        let n = u64::from(spec.categories);
        let mut parents = Vec::with_capacity(n as usize);
        let mut depth: Vec<u8> = Vec::with_capacity(n as usize);
        for i in 0..n {
            let p = g.category_parent(i, &depth);
            depth.push(p.map_or(0, |p| depth[p as usize] + 1));
            parents.push(p.map(|p| p as u32));
        }
        Ok(Project {
            key: key.to_owned(),
            source: Source::Generated(Box::new(g)),
            cols,
            parents,
            rounds: [0; 5],
            custom: BTreeMap::new(),
            custom_seq: 0,
            patches: BTreeMap::new(),
        })
    }

    /// The example project `key` from `dir` (`<resource>.example.json` lists and the
    /// optional single-resource files).
    pub fn examples(key: &str, dir: &Path) -> Result<Project, InvalidConfig> {
        valid_project_key(key)?;
        let read = |name: &str| -> Result<Option<Value>, InvalidConfig> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(b) => serde_json::from_slice(&b)
                    .map(Some)
                    .map_err(|e| InvalidConfig(format!("{}: {e}", path.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(InvalidConfig(format!("{}: {e}", path.display()))),
            }
        };
        let list = |plural: &str| -> Result<Vec<Value>, InvalidConfig> {
            let name = format!("{plural}.example.json");
            let v = read(&name)?
                .ok_or_else(|| InvalidConfig(format!("{}: missing", dir.join(&name).display())))?;
            v["results"]
                .as_array()
                .cloned()
                .ok_or_else(|| InvalidConfig(format!("{name}: no `results` array")))
        };
        let mut cols = Vec::new();
        let mut singles = HashMap::new();
        for (r, single) in [
            (Resource::Customers, "customer"),
            (Resource::Orders, "order"),
            (Resource::Categories, "category"),
            (Resource::Products, "product"),
            (Resource::ProductProjections, "product-projection"),
        ] {
            let c = Collection::stored(list(r.path())?).map_err(InvalidConfig)?;
            cols.push(c);
            if let Some(v) = read(&format!("{single}.example.json"))?
                && let Some(id) = v["id"].as_str()
            {
                singles.insert((r, id.to_owned()), v);
            }
        }
        let mut custom = BTreeMap::new();
        let mut objects = list("custom-objects")?;
        if let Some(v) = read("custom-object.example.json")? {
            objects.push(v);
        }
        for o in objects {
            let (Some(c), Some(k)) = (o["container"].as_str(), o["key"].as_str()) else {
                return Err(InvalidConfig(format!(
                    "custom object without container/key: {o}"
                )));
            };
            custom.insert((c.to_owned(), k.to_owned()), o);
        }
        Ok(Project {
            key: key.to_owned(),
            source: Source::Examples { singles },
            cols,
            parents: Vec::new(),
            rounds: [0; 5],
            custom,
            custom_seq: 0,
            patches: BTreeMap::new(),
        })
    }

    /// The project key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn g(&self) -> Option<&Gen> {
        match &self.source {
            Source::Generated(g) => Some(g),
            Source::Examples { .. } => None,
        }
    }

    /// The collection serving `r` (generated projections are the products').
    fn col(&self, r: Resource) -> &Collection {
        match (r, &self.source) {
            (Resource::ProductProjections, Source::Generated(_)) => &self.cols[3],
            _ => &self.cols[slot(r)],
        }
    }

    fn col_mut(&mut self, r: Resource) -> &mut Collection {
        let s = match (r, &self.source) {
            (Resource::ProductProjections, Source::Generated(_)) => 3,
            _ => slot(r),
        };
        &mut self.cols[s]
    }

    /// How many `r` there are (product projections: published ones).
    pub fn len(&self, r: Resource) -> usize {
        let c = self.col(r);
        if r == Resource::ProductProjections {
            c.published.iter().filter(|p| **p).count()
        } else {
            c.len()
        }
    }

    /// Whether the project has no `r`.
    pub fn is_empty(&self, r: Resource) -> bool {
        self.len(r) == 0
    }

    /// The ids of every `r` (product projections: of the published products), sorted as
    /// strings (the order of `sort=id asc`).
    pub fn ids(&self, r: Resource) -> Vec<String> {
        let c = self.col(r);
        c.by_id
            .iter()
            .filter(|i| r != Resource::ProductProjections || c.published[**i as usize])
            .map(|i| c.ids[*i as usize].clone())
            .collect()
    }

    /// The ids of the `r` with `lastModifiedAt >= since`, sorted as strings.
    pub fn modified_since(&self, r: Resource, since: DateTime<Utc>) -> Vec<String> {
        let t = since.timestamp_millis();
        let c = self.col(r);
        c.by_id
            .iter()
            .filter(|i| c.modified[**i as usize] >= t)
            .filter(|i| r != Resource::ProductProjections || c.published[**i as usize])
            .map(|i| c.ids[*i as usize].clone())
            .collect()
    }

    /// `r` number `id` as served by `GET …/{id}` without `expand` (product projections:
    /// the current one, `None` when unpublished).
    pub fn get(&self, r: Resource, id: &str) -> Option<Value> {
        self.get_staged(r, id, false)
    }

    /// Like [`get`](Self::get); `staged` picks the staged product projection.
    pub fn get_staged(&self, r: Resource, id: &str, staged: bool) -> Option<Value> {
        if let Source::Examples { singles } = &self.source
            && let Some(v) = singles.get(&(r, id.to_owned()))
        {
            return Some(v.clone());
        }
        let c = self.col(r);
        let i = c.index_of(id)?;
        if r == Resource::ProductProjections && !staged && !c.published[i as usize] {
            return None;
        }
        Some(self.body(r, i, staged))
    }

    /// Applies a JSON merge patch (RFC 7386: a `null` member removes the field) to what
    /// `r` number `id` is served as, from now on (its version and time stay as they are).
    /// The real API never serves such a resource: this is a fault knob, for tests of what a
    /// client does with a resource it cannot map (no `id`, a `version` that is text).
    /// Returns the patched body, `None` for an unknown id.
    pub fn patch(
        &mut self,
        r: Resource,
        id: &str,
        patch: serde_json::Map<String, Value>,
    ) -> Option<Value> {
        let i = self.col(r).index_of(id)?;
        self.patches.entry((slot(r), i)).or_default().extend(patch);
        Some(self.body(r, i, false))
    }

    /// The body of `r` at index `i` as listed.
    pub(crate) fn body(&self, r: Resource, i: u32, staged: bool) -> Value {
        let mut body = self.unpatched_body(r, i, staged);
        if let Some(patch) = self.patches.get(&(slot(r), i))
            && let Value::Object(fields) = &mut body
        {
            for (k, v) in patch {
                if v.is_null() {
                    fields.remove(k);
                } else {
                    fields.insert(k.clone(), v.clone());
                }
            }
        }
        body
    }

    fn unpatched_body(&self, r: Resource, i: u32, staged: bool) -> Value {
        let c = self.col(r);
        let Some(g) = self.g() else {
            return c.stored_body(i);
        };
        let (v, m) = (c.version[i as usize], c.modified[i as usize]);
        let n = u64::from(i);
        match r {
            Resource::Customers => g.customer(n, v, m),
            Resource::Orders => g.order(n, v, m),
            Resource::Categories => g.category(n, v, m, &self.ancestors(i)),
            Resource::Products => g.product(n, v, m),
            Resource::ProductProjections => g.product_projection(n, v, m, staged),
        }
    }

    fn ancestors(&self, i: u32) -> Vec<u64> {
        let mut out = Vec::new();
        let mut p = self.parents.get(i as usize).copied().flatten();
        while let Some(j) = p {
            out.push(u64::from(j));
            p = self.parents.get(j as usize).copied().flatten();
        }
        out.reverse();
        out
    }

    /// A page of `r`: the bodies (expanded along `expand`) and the total.
    pub(crate) fn page(
        &self,
        r: Resource,
        q: &PageQuery,
        staged: bool,
        expand: &[Vec<Seg>],
    ) -> (Vec<Value>, Option<u64>) {
        let published_only = r == Resource::ProductProjections && !staged;
        let (idx, total) = self.col(r).run(q, published_only);
        let bodies = idx
            .into_iter()
            .map(|i| {
                let mut b = self.body(r, i, staged);
                self.expand(&mut b, expand);
                b
            })
            .collect();
        (bodies, total)
    }

    /// Expands the references along `paths` in `v`.
    pub(crate) fn expand(&self, v: &mut Value, paths: &[Vec<Seg>]) {
        for p in paths {
            self.expand_at(v, p, 0);
        }
    }

    fn expand_at(&self, v: &mut Value, segs: &[Seg], depth: usize) {
        let Some((first, rest)) = segs.split_first() else {
            return;
        };
        if depth > 8 {
            return;
        }
        let Some(child) = v.get_mut(&first.name) else {
            return;
        };
        let targets: Vec<&mut Value> = match first.index {
            None => vec![child],
            Some(None) => match child.as_array_mut() {
                Some(a) => a.iter_mut().collect(),
                None => Vec::new(),
            },
            Some(Some(k)) => child.get_mut(k).into_iter().collect(),
        };
        for t in targets {
            let is_ref = t.get("typeId").is_some() && t.get("id").is_some();
            if is_ref {
                if t.get("obj").is_none()
                    && let Some(obj) = self.resolve(&t["typeId"], &t["id"])
                {
                    t["obj"] = obj;
                }
                if let Some(obj) = t.get_mut("obj") {
                    self.expand_at(obj, rest, depth + 1);
                }
            } else {
                self.expand_at(t, rest, depth + 1);
            }
        }
    }

    fn resolve(&self, type_id: &Value, id: &Value) -> Option<Value> {
        let r = match type_id.as_str()? {
            "category" => Resource::Categories,
            "customer" => Resource::Customers,
            "product" => Resource::Products,
            "order" => Resource::Orders,
            _ => return None,
        };
        self.get(r, id.as_str()?)
    }

    /// Bumps `version` and `lastModifiedAt` (to `at`, and at least 1 ms after the old
    /// time) of `count` distinct `r` (at most all of them), chosen by
    /// `hash(seed, resource, call number, k)`; returns their ids in that order. Product
    /// projections are touched through their products (either name works).
    pub fn touch(&mut self, r: Resource, count: usize, at: DateTime<Utc>) -> Vec<String> {
        let r = if r == Resource::ProductProjections && self.g().is_some() {
            Resource::Products
        } else {
            r
        };
        let seed = self.g().map_or(0, |g| g.spec.seed);
        let round = self.rounds[slot(r)];
        self.rounds[slot(r)] += 1;
        let at = at.timestamp_millis();
        let c = self.col_mut(r);
        let n = c.len() as u64;
        let count = (count as u64).min(n);
        let mut chosen = Vec::new();
        let mut seen = HashSet::new();
        let mut k = 0u64;
        while (chosen.len() as u64) < count {
            let i = if k < count * 4 {
                h3(seed ^ 0x70C4, slot(r) as u64, round, k) % n
            } else {
                // Few left: take the next untouched in index order.
                (0..n).find(|i| !seen.contains(i)).unwrap_or(0)
            };
            k += 1;
            if seen.insert(i) {
                chosen.push(i as usize);
            }
        }
        for &i in &chosen {
            c.version[i] += 1;
            c.modified[i] = at.max(c.modified[i] + 1);
            c.touched[i] = true;
        }
        c.build_modified();
        chosen.iter().map(|i| c.ids[*i].clone()).collect()
    }

    /// The custom object `(container, key)`.
    pub fn custom_object(&self, container: &str, key: &str) -> Option<Value> {
        self.custom
            .get(&(container.to_owned(), key.to_owned()))
            .cloned()
    }

    /// The custom objects (of `container`, or all), sorted by container and key.
    pub fn custom_objects(&self, container: Option<&str>) -> Vec<Value> {
        self.custom
            .iter()
            .filter(|((c, _), _)| container.is_none_or(|x| x == c))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Creates (`Ok((true, object))`) or replaces (`Ok((false, object))`) a custom object at
    /// `now`. `version`: it must be the current one (or 0 for a missing object).
    pub(crate) fn put_custom_object(
        &mut self,
        container: &str,
        key: &str,
        value: Value,
        version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<(bool, Value), CustomObjectError> {
        let now = fmt_ms(now.timestamp_millis());
        let k = (container.to_owned(), key.to_owned());
        match self.custom.get_mut(&k) {
            Some(o) => {
                let current = o["version"].as_u64().unwrap_or(1);
                if version.is_some_and(|v| v != current) {
                    return Err(CustomObjectError::Conflict(Some(current)));
                }
                o["version"] = json!(current + 1);
                o["value"] = value;
                o["lastModifiedAt"] = json!(now);
                Ok((false, o.clone()))
            }
            None => {
                if version.is_some_and(|v| v != 0) {
                    return Err(CustomObjectError::Conflict(None));
                }
                self.custom_seq += 1;
                let seed = self.g().map_or(7, |g| g.spec.seed);
                let a = h3(seed, 0xC0, self.custom_seq, 1);
                let b = h3(seed, 0xC0, self.custom_seq, 2);
                let id = format!(
                    "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                    a >> 32,
                    (a >> 16) & 0xFFFF,
                    a & 0xFFF,
                    0x8000 | (b >> 48 & 0x3FFF),
                    b & 0xFFFF_FFFF_FFFF
                );
                let o = json!({
                    "id": id,
                    "version": 1,
                    "versionModifiedAt": now,
                    "createdAt": now,
                    "lastModifiedAt": now,
                    "container": container,
                    "key": key,
                    "value": value,
                });
                self.custom.insert(k, o.clone());
                Ok((true, o))
            }
        }
    }

    /// Deletes a custom object (when `version`, only at that version).
    pub(crate) fn delete_custom_object(
        &mut self,
        container: &str,
        key: &str,
        version: Option<u64>,
    ) -> Result<Value, CustomObjectError> {
        let k = (container.to_owned(), key.to_owned());
        let Some(o) = self.custom.get(&k) else {
            return Err(CustomObjectError::NotFound);
        };
        let current = o["version"].as_u64().unwrap_or(1);
        if version.is_some_and(|v| v != current) {
            return Err(CustomObjectError::Conflict(Some(current)));
        }
        self.custom.remove(&k).ok_or(CustomObjectError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commercetools::query::parse_where;

    fn spec() -> CommercetoolsDataSpec {
        CommercetoolsDataSpec {
            customers: 50,
            orders: 300,
            categories: 40,
            products: 80,
            ..CommercetoolsDataSpec::default()
        }
    }

    fn q(pred: Option<&str>, sort: &[(Field, Dir)], limit: usize) -> PageQuery {
        PageQuery {
            pred: pred.map(|p| parse_where(p, &HashMap::new()).expect("valid predicate")),
            sort: sort.to_vec(),
            limit,
            offset: 0,
            with_total: true,
        }
    }

    #[test]
    fn keyset_over_sorted_ids() {
        let p = Project::generate("t1", &spec()).expect("valid spec");
        let want = p.ids(Resource::Orders);
        assert_eq!(want.len(), 300);
        let mut got: Vec<String> = Vec::new();
        loop {
            let pred = got.last().map(|l| format!("id > \"{l}\""));
            let mut query = q(pred.as_deref(), &[(Field::Id, Dir::Asc)], 7);
            query.with_total = false;
            let (page, total) = p.page(Resource::Orders, &query, false, &[]);
            assert_eq!(total, None);
            let n = page.len();
            got.extend(
                page.iter()
                    .map(|b| b["id"].as_str().expect("id").to_owned()),
            );
            if n < 7 {
                break;
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn secondary_sort_breaks_ties() {
        let mut p = Project::generate("t1", &spec()).expect("valid spec");
        let at = Utc::now();
        let touched = p.touch(Resource::Customers, 10, at);
        assert_eq!(touched.len(), 10);
        let query = q(
            Some(&format!("lastModifiedAt >= \"{}\"", at.to_rfc3339())),
            &[(Field::LastModifiedAt, Dir::Desc), (Field::Id, Dir::Desc)],
            100,
        );
        let (page, total) = p.page(Resource::Customers, &query, false, &[]);
        assert_eq!(total, Some(10));
        let ids: Vec<&str> = page.iter().map(|b| b["id"].as_str().expect("id")).collect();
        let mut want = touched.clone();
        want.sort();
        want.reverse();
        assert_eq!(ids, want);
    }

    #[test]
    fn category_tree_is_deep_and_consistent() {
        let p = Project::generate("t1", &spec()).expect("valid spec");
        let depths: Vec<usize> = (0..40).map(|i| p.ancestors(i).len()).collect();
        assert!(depths.iter().max().copied().unwrap_or(0) >= 2, "{depths:?}");
        assert!(depths.iter().all(|d| *d <= 4));
        for id in p.ids(Resource::Categories) {
            let c = p
                .get(Resource::Categories, &id)
                .expect("listed id resolves");
            let anc = c["ancestors"].as_array().expect("ancestors");
            match anc.last() {
                Some(last) => assert_eq!(last["id"], c["parent"]["id"]),
                None => assert!(c.get("parent").is_none()),
            }
        }
    }

    #[test]
    fn large_projects_page_without_materialising() {
        let spec = CommercetoolsDataSpec {
            orders: 100_000,
            customers: 10,
            products: 10,
            categories: 5,
            ..CommercetoolsDataSpec::default()
        };
        let p = Project::generate("big", &spec).expect("valid spec");
        let ids = p.ids(Resource::Orders);
        let last = &ids[ids.len() - 301];
        let mut query = q(
            Some(&format!("id > \"{last}\"")),
            &[(Field::Id, Dir::Asc)],
            500,
        );
        query.with_total = false;
        let started = std::time::Instant::now();
        let (page, total) = p.page(Resource::Orders, &query, false, &[]);
        let took = started.elapsed();
        assert_eq!(total, None);
        let got: Vec<&str> = page.iter().map(|b| b["id"].as_str().expect("id")).collect();
        assert_eq!(
            got,
            ids[ids.len() - 300..]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        // 300 bodies, not 100 000 (generous for debug builds on a busy machine).
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn expansion_paths() {
        assert_eq!(
            parse_expand("categories[*].ancestors[0]"),
            Some(vec![
                Seg {
                    name: "categories".into(),
                    index: Some(None)
                },
                Seg {
                    name: "ancestors".into(),
                    index: Some(Some(0))
                },
            ])
        );
        assert_eq!(parse_expand("a[x]"), None);
        assert_eq!(parse_expand("a..b"), None);
    }
}
