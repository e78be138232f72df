//! The catalog: `GET /api/catalog-items|catalog-variants|catalog-categories` (keyset pages
//! of at most 100, `page[cursor]`; `filter` `any(ids,[…])`, `equals(category.id,…)` (items),
//! `equals(item.id,…)` (variants, categories), `equals(sku,…)`, `contains(title|name,…)`,
//! `equals(published,…)`; `sort` `created` / `-created`, else id order; `include=variants` on
//! items), `GET …/{id}`, `GET /api/catalog-items/{id}/variants`, the relationship reads
//! `GET /api/catalog-items/{id}/relationships/categories` and
//! `GET /api/catalog-categories/{id}/relationships/items`, and the single writes `POST`
//! (201), `PATCH /{id}` (200), `DELETE /{id}` (204). Ids are
//! `$custom:::$default:::<external_id>`; a create of an existing id is a 409, an update or
//! delete of a missing one a 404, a variant of a missing item a 404.

use super::super::written::{Action, Catalog, CatalogObject, Resource};
use super::writes::{Reply, StoreOp, WriteCx};
use super::*;

const ITEMS_ALLOWED: Allowed = &[
    ("ids", &[Op::Any]),
    ("category.id", &[Op::Equals]),
    ("title", &[Op::Contains]),
    ("published", &[Op::Equals]),
];
const VARIANTS_ALLOWED: Allowed = &[
    ("ids", &[Op::Any]),
    ("item.id", &[Op::Equals]),
    ("sku", &[Op::Equals]),
    ("title", &[Op::Contains]),
    ("published", &[Op::Equals]),
];
const CATEGORIES_ALLOWED: Allowed = &[
    ("ids", &[Op::Any]),
    ("item.id", &[Op::Equals]),
    ("name", &[Op::Contains]),
];
/// Objects per catalog page: default and maximum.
const CATALOG_PAGE: usize = 100;

/// Whether `obj` (id `id`) of kind `r` meets condition `c`.
fn meets(cat: &Catalog, r: Resource, id: &str, obj: &CatalogObject, c: &Cond) -> bool {
    let texts = text_value(c);
    let first = texts.first().copied().unwrap_or_default();
    match c.field.as_str() {
        "ids" => texts.contains(&id),
        "category.id" => obj.categories.contains(first),
        "item.id" => match r {
            Resource::Variant => obj.item.as_deref() == Some(first),
            _ => cat
                .items
                .get(first)
                .is_some_and(|i| i.categories.contains(id)),
        },
        "published" => {
            let want = first.eq_ignore_ascii_case("true");
            obj.attributes.get("published").and_then(Value::as_bool) == Some(want)
        }
        field @ ("sku" | "title" | "name") => {
            let v = obj
                .attributes
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default();
            if c.op == Op::Contains {
                v.contains(first)
            } else {
                v == first
            }
        }
        _ => false,
    }
}

impl Ctx<'_> {
    /// One catalog resource object as read.
    pub(super) fn catalog_json(&self, r: Resource, id: &str, obj: &CatalogObject) -> Value {
        let b = &self.base;
        let p = r.path();
        let enc = url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
        let attrs = Catalog::attributes_json(r, obj);
        let fields = self.q.list(&format!("fields[{}]", r.type_name()));
        let link = |rel: &str| {
            json!({
                "self": format!("{b}/api/{p}/{enc}/relationships/{rel}/"),
                "related": format!("{b}/api/{p}/{enc}/{rel}/"),
            })
        };
        let relationships = match r {
            Resource::Item => json!({"variants": {"links": link("variants")}}),
            Resource::Variant => json!({"item": {
                "data": {"type": "catalog-item", "id": obj.item},
                "links": link("item"),
            }}),
            Resource::Category => json!({"items": {"links": link("items")}}),
        };
        json!({
            "type": r.type_name(),
            "id": id,
            "attributes": sparse(attrs, &fields),
            "relationships": relationships,
            "links": {"self": format!("{b}/api/{p}/{enc}/")},
        })
    }

    /// `page[size]` (1..=100) and the key to resume after.
    fn catalog_page(&self) -> Result<(usize, Option<String>), ApiErr> {
        let size = match self.q.get("page[size]") {
            None => CATALOG_PAGE,
            Some(s) => s
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=CATALOG_PAGE).contains(n))
                .ok_or_else(|| {
                    ApiErr::param(
                        "page[size]",
                        format!(
                            "Page size must be an integer between 1 and {CATALOG_PAGE}, got '{s}'."
                        ),
                    )
                })?,
        };
        let Some(given) = self.q.get("page[cursor]") else {
            return Ok((size, None));
        };
        let bad = || ApiErr::param("page[cursor]", format!("Invalid page cursor '{given}'."));
        let c: Value = hex::decode(cursor_token(given))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(bad)?;
        let same = c["f"].as_str() == Some(self.q.get("filter").unwrap_or(""))
            && c["s"].as_str() == Some(self.q.get("sort").unwrap_or(""));
        if !same {
            return Err(ApiErr::param(
                "page[cursor]",
                "The page cursor was made for another filter or sort.",
            ));
        }
        Ok((size, Some(c["k"].as_str().ok_or_else(bad)?.to_owned())))
    }

    /// A link to the page after key `key`.
    fn catalog_cursor(&self, key: &str) -> String {
        let c = json!({
            "k": key,
            "f": self.q.get("filter").unwrap_or(""),
            "s": self.q.get("sort").unwrap_or(""),
        });
        let cursor = hex::encode(serde_json::to_vec(&c).unwrap_or_default());
        format!("{}?{}", self.path(), self.q.encode(Some(&cursor)))
    }

    /// A collection of catalog objects of kind `r` (the variants of item `item` only, when
    /// given).
    pub(super) fn catalog_list(&self, r: Resource, item: Option<&str>) -> Result<Value, ApiErr> {
        let cat = &self.ov.written.catalog;
        let allowed = match r {
            Resource::Item => ITEMS_ALLOWED,
            Resource::Variant => VARIANTS_ALLOWED,
            Resource::Category => CATEGORIES_ALLOWED,
        };
        let conds = match self.q.get("filter").filter(|f| !f.trim().is_empty()) {
            None => Vec::new(),
            Some(f) => filter::parse(f, allowed).map_err(|e| ApiErr::param("filter", e))?,
        };
        let sort = self.q.get("sort");
        let (size, after_key) = self.catalog_page()?;
        let desc = sort == Some("-created");
        let key = |id: &str, o: &CatalogObject| match sort {
            Some(_) => format!("{:012}|{id}", o.created.max(0)),
            None => id.to_owned(),
        };
        // `any(ids,[…])` (how a writer looks its ids up) reads just those.
        let map = cat.map(r);
        let named: Option<Vec<(&String, &CatalogObject)>> =
            conds.iter().find(|c| c.field == "ids").map(|c| {
                let wanted: BTreeSet<&str> = text_value(c).into_iter().collect();
                wanted
                    .into_iter()
                    .filter_map(|id| map.get_key_value(id))
                    .collect()
            });
        let candidates: Box<dyn Iterator<Item = (&String, &CatalogObject)>> = match named {
            Some(v) => Box::new(v.into_iter()),
            None => Box::new(map.iter()),
        };
        let mut rows: Vec<(String, &String, &CatalogObject)> = candidates
            .filter(|(id, o)| {
                item.is_none_or(|i| o.item.as_deref() == Some(i))
                    && conds.iter().all(|c| meets(cat, r, id, o, c))
            })
            .map(|(id, o)| (key(id, o), id, o))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        if desc {
            rows.reverse();
        }
        if let Some(k) = &after_key {
            rows.retain(|(rk, _, _)| if desc { rk < k } else { rk > k });
        }
        let more = rows.len() > size;
        rows.truncate(size);
        let next = if more {
            rows.last().map(|(k, _, _)| self.catalog_cursor(k))
        } else {
            None
        };
        let with_variants = r == Resource::Item && self.including("variants");
        // The page's items' variants, in one pass over the variants.
        let mut by_item: HashMap<&str, Vec<(&String, &CatalogObject)>> = HashMap::new();
        if with_variants {
            let page_ids: BTreeSet<&str> = rows.iter().map(|(_, id, _)| id.as_str()).collect();
            for (vid, x) in &cat.variants {
                if let Some(item) = x.item.as_deref().filter(|i| page_ids.contains(i)) {
                    by_item.entry(item).or_default().push((vid, x));
                }
            }
        }
        let mut included = Vec::new();
        let mut data: Vec<Value> = Vec::with_capacity(rows.len());
        for (_, id, o) in &rows {
            let mut v = self.catalog_json(r, id, o);
            if with_variants {
                let variants = by_item.remove(id.as_str()).unwrap_or_default();
                v["relationships"]["variants"]["data"] = variants
                    .iter()
                    .map(|(vid, _)| json!({"type": "catalog-variant", "id": vid}))
                    .collect();
                included.extend(
                    variants
                        .iter()
                        .map(|(vid, x)| self.catalog_json(Resource::Variant, vid, x)),
                );
            }
            data.push(v);
        }
        let mut doc = json!({
            "data": data,
            "links": {"self": self.self_link(), "next": next, "prev": Value::Null},
        });
        if !self.includes().is_empty() {
            doc["included"] = Value::Array(included);
        }
        Ok(doc)
    }

    /// `GET /api/catalog-…/{id}`.
    pub(super) fn catalog_one(&self, r: Resource) -> Result<Value, ApiErr> {
        let cat = &self.ov.written.catalog;
        let obj = cat.map(r).get(&self.id).ok_or_else(|| {
            ApiErr::not_found(format!(
                "{} with id '{}' does not exist.",
                r.label(),
                self.id
            ))
        })?;
        let mut data = self.catalog_json(r, &self.id, obj);
        let mut doc = json!({"links": {"self": self.self_link()}});
        if r == Resource::Item && self.including("variants") {
            let variants: Vec<(&String, &CatalogObject)> = cat
                .variants
                .iter()
                .filter(|(_, x)| x.item.as_deref() == Some(self.id.as_str()))
                .collect();
            data["relationships"]["variants"]["data"] = variants
                .iter()
                .map(|(vid, _)| json!({"type": "catalog-variant", "id": vid}))
                .collect();
            doc["included"] = variants
                .iter()
                .map(|(vid, x)| self.catalog_json(Resource::Variant, vid, x))
                .collect();
        } else if !self.includes().is_empty() {
            doc["included"] = json!([]);
        }
        doc["data"] = data;
        Ok(doc)
    }

    /// `GET /api/catalog-items/{id}/relationships/categories` and
    /// `GET /api/catalog-categories/{id}/relationships/items`: `{type, id}` of every one
    /// (keyset pages of 100 in id order).
    pub(super) fn catalog_links(&self, op: StoreOp) -> Result<Value, ApiErr> {
        let cat = &self.ov.written.catalog;
        let (kind, ids): (&str, Vec<&String>) = if op == StoreOp::ItemCategoryIds {
            let item = cat.items.get(&self.id).ok_or_else(|| {
                ApiErr::not_found(format!(
                    "Catalog item with id '{}' does not exist.",
                    self.id
                ))
            })?;
            ("catalog-category", item.categories.iter().collect())
        } else {
            if !cat.categories.contains_key(&self.id) {
                return Err(ApiErr::not_found(format!(
                    "Catalog category with id '{}' does not exist.",
                    self.id
                )));
            }
            (
                "catalog-item",
                cat.items
                    .iter()
                    .filter(|(_, i)| i.categories.contains(&self.id))
                    .map(|(id, _)| id)
                    .collect(),
            )
        };
        let (size, after_key) = self.catalog_page()?;
        let mut ids: Vec<&String> = ids
            .into_iter()
            .filter(|id| after_key.as_ref().is_none_or(|k| *id > k))
            .collect();
        let more = ids.len() > size;
        ids.truncate(size);
        let next = if more {
            ids.last().map(|k| self.catalog_cursor(k))
        } else {
            None
        };
        Ok(json!({
            "data": ids.iter().map(|id| json!({"type": kind, "id": id})).collect::<Vec<_>>(),
            "links": {"self": self.self_link(), "next": next, "prev": Value::Null},
        }))
    }
}

impl WriteCx<'_> {
    /// `POST /api/catalog-…` (201), `PATCH /{id}` (200), `DELETE /{id}` (204).
    pub(super) fn catalog_write(
        &self,
        ov: &mut Overlay,
        op: StoreOp,
        r: Resource,
        doc: &Value,
    ) -> Result<Reply, ApiErr> {
        let now = self.now();
        let data = &doc["data"];
        let action = match op {
            StoreOp::CatalogCreate(_) => Action::Create,
            StoreOp::CatalogUpdate(_) => Action::Update,
            _ => Action::Delete,
        };
        if action == Action::Update && data["id"].as_str() != Some(self.id) {
            return Err(ApiErr {
                status: StatusCode::CONFLICT,
                code: "conflict",
                title: "Conflict.",
                detail: format!(
                    "The id in the body ({}) is not the id in the path ({}).",
                    data["id"], self.id
                ),
                source: Some(("pointer", "/data/id".into())),
            });
        }
        let cat = &mut ov.written.catalog;
        let result = match action {
            Action::Create => cat.create(r, data, now),
            Action::Update => cat
                .update(r, self.id, data, now)
                .map(|()| self.id.to_owned()),
            Action::Delete => cat.delete(r, self.id).map(|()| self.id.to_owned()),
        };
        let id = result.map_err(|e| ApiErr {
            status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            code: e.code,
            title: e.title,
            detail: e.detail,
            source: Some(("pointer", format!("/data{}", e.pointer))),
        })?;
        if action == Action::Delete {
            return Ok(Reply::Empty(StatusCode::NO_CONTENT));
        }
        let cx = self.ctx(ov, Ep::Store(StoreOp::CatalogGet(r)));
        let Some(obj) = ov.written.catalog.map(r).get(&id) else {
            return Err(ApiErr::not_found(format!("{} {id} vanished.", r.label())));
        };
        let data = cx.catalog_json(r, &id, obj);
        let links = json!({"self": data["links"]["self"].clone()});
        let status = if action == Action::Create {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(Reply::Doc(status, json!({"data": data, "links": links})))
    }
}
