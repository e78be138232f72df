//! The commercetools connector in Klaviyo mode (`params.klaviyo`, `docs/klaviyo-sync.md`)
//! against the sandbox's commercetools emulation: every emitted `klaviyo.*` row of a small
//! generated project, checked field by field against its source resource as the emulator
//! generates it (the expectations are computed here from the source, not by the mapping
//! functions); partial jobs by `ids` and `start_id`; the plugin's legacy lock object.
//! Only the sandbox runs (no broker, no database): tasks are planned and fetched by the
//! connector directly, children included.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sluice_connectors::{Connector, ConnectorContext};
use sluice_contracts::Settings;
use sluice_e2e::{ConnectorRun, run_connector};
use sluice_sandbox::commercetools::{
    CommercetoolsConfig, CommercetoolsDataSpec, Project, Resource,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TEMPLATE: &str = "https://shop.example/p/{{productSlug}}";

fn spec() -> CommercetoolsDataSpec {
    CommercetoolsDataSpec {
        seed: 12,
        customers: 80,
        orders: 400,
        categories: 30,
        products: 80,
        ..CommercetoolsDataSpec::default()
    }
}

struct Sandbox {
    url: String,
    project: Project,
    stop: CancellationToken,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn sandbox() -> Sandbox {
    sandbox_with(CommercetoolsConfig {
        data: spec(),
        ..CommercetoolsConfig::default()
    })
    .await
}

async fn sandbox_with(config: CommercetoolsConfig) -> Sandbox {
    let project = Project::generate(&config.project_key, &config.data).expect("project");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let stop = CancellationToken::new();
    let mut sandbox_config = sluice_sandbox::Config::default().with(&config);
    sandbox_config.cache_dir =
        std::env::temp_dir().join(format!("sluice-ct-klaviyo-{}", Uuid::new_v4()));
    let token = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = sluice_sandbox::run(sandbox_config, listener, token).await {
            eprintln!("sandbox: {e:#}");
        }
    });
    Sandbox { url, project, stop }
}

fn settings(url: &str) -> Settings {
    settings_of(url, sluice_sandbox::commercetools::DEFAULT_PROJECT_KEY)
}

fn settings_of(url: &str, project: &str) -> Settings {
    let env = [
        ("API_URL", url),
        ("AUTH_URL", url),
        ("PROJECT_KEY", project),
        (
            "CLIENT_ID",
            sluice_sandbox::commercetools::DEFAULT_CLIENT_ID,
        ),
        (
            "CLIENT_SECRET",
            sluice_sandbox::commercetools::DEFAULT_CLIENT_SECRET,
        ),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            format!("SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__{k}"),
            v.to_string(),
        )
    })
    // Small pages: several pages per task, so the order-products lookup runs per page.
    .chain([(
        "SLUICE__CONNECTORS__COMMERCETOOLS__PAGE_SIZE".to_string(),
        "20".to_string(),
    )]);
    Settings::load_from(None, env).expect("settings")
}

fn connector(url: &str) -> Arc<dyn Connector> {
    sluice_connectors::commercetools::connector(&settings(url), &ConnectorContext::default())
        .expect("connector")
}

/// What a job emitted, every emitted table checked to be a Klaviyo one.
async fn run(connector: &Arc<dyn Connector>, stream: &str, params: Value) -> ConnectorRun {
    let out = run_connector(connector.as_ref(), stream, params)
        .await
        .expect("plan and fetch");
    for table in out.rows.keys() {
        assert!(
            table.starts_with("klaviyo."),
            "{stream}: {table} emitted in Klaviyo mode"
        );
    }
    out
}

fn klaviyo(currency: Option<&str>) -> Value {
    json!({"klaviyo": {
        "preferred_locale": "en-GB",
        "preferred_currency": currency,
        "product_url_template": TEMPLATE,
    }})
}

fn by_id(rows: &[Vec<Value>]) -> BTreeMap<String, Vec<Value>> {
    let map: BTreeMap<String, Vec<Value>> = rows
        .iter()
        .map(|r| (r[0].as_str().expect("id").to_string(), r.clone()))
        .collect();
    assert_eq!(map.len(), rows.len(), "an id emitted twice");
    map
}

fn en(v: &Value) -> String {
    v["en"].as_str().expect("an en text").to_string()
}

fn money(m: &Value) -> f64 {
    m["centAmount"].as_i64().expect("cents") as f64 / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_map_to_profiles_field_by_field() {
    let sb = sandbox().await;
    let c = connector(&sb.url);
    let out = run(&c, "customers", klaviyo(None)).await;
    assert!(out.rejected.is_empty(), "{:#?}", out.rejected);
    let profiles = by_id(&out.rows["klaviyo.profile"]);
    let ids = sb.project.ids(Resource::Customers);
    assert_eq!(profiles.keys().cloned().collect::<Vec<_>>(), ids);
    let mut with_location = 0;
    for id in &ids {
        let customer = sb.project.get(Resource::Customers, id).expect("customer");
        let a = &profiles[id][1];
        assert_eq!(a["external_id"], json!(id));
        assert_eq!(a["email"], customer["email"]);
        assert_eq!(a["first_name"], customer["firstName"]);
        assert_eq!(a["last_name"], customer["lastName"]);
        let addresses = customer["addresses"].as_array().expect("addresses");
        let find = |aid: &Value| addresses.iter().find(|x| x["id"] == *aid);
        let chosen = find(&customer["defaultBillingAddressId"])
            .or_else(|| find(&customer["billingAddressIds"][0]))
            .or_else(|| addresses.first());
        match chosen {
            None => {
                assert!(a.get("location").is_none(), "{id}");
                assert!(a.get("phone_number").is_none(), "{id}");
            }
            Some(address) => {
                with_location += 1;
                let l = &a["location"];
                assert_eq!(l["city"], address["city"], "{id}");
                assert_eq!(l["country"], address["country"], "{id}");
                assert_eq!(l["zip"], address["postalCode"], "{id}");
                assert_eq!(
                    l["address1"],
                    json!(format!(
                        "{}, {}",
                        address["streetNumber"].as_str().expect("number"),
                        address["streetName"].as_str().expect("street")
                    )),
                    "{id}"
                );
                let phone = address
                    .get("mobile")
                    .or_else(|| address.get("phone"))
                    .cloned();
                assert_eq!(a.get("phone_number").cloned(), phone, "{id}");
            }
        }
        // The generated project has no custom fields, company or title.
        for absent in ["properties", "organization", "title"] {
            assert!(a.get(absent).is_none(), "{id}: {absent}");
        }
    }
    assert!(with_location > 0 && with_location < ids.len());
}

/// The breadcrumbs of a product as the emulator's categories name them (English).
fn expected_crumbs(project: &Project, product_id: &str) -> Vec<String> {
    let Some(product) = project.get(Resource::Products, product_id) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for r in product["masterData"]["current"]["categories"]
        .as_array()
        .expect("categories")
    {
        let category = project
            .get(Resource::Categories, r["id"].as_str().expect("id"))
            .expect("category");
        let mut names: Vec<String> = category["ancestors"]
            .as_array()
            .expect("ancestors")
            .iter()
            .map(|a| {
                en(&project
                    .get(Resource::Categories, a["id"].as_str().expect("id"))
                    .expect("ancestor")["name"])
            })
            .collect();
        names.push(en(&category["name"]));
        for i in 1..=names.len() {
            let crumb = names[..i].join(" > ");
            if !out.contains(&crumb) {
                out.push(crumb);
            }
        }
    }
    out
}

fn time_plus(created: &Value, seconds: i64) -> Value {
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(created.as_str().expect("createdAt"))
        .expect("time")
        .with_timezone(&Utc);
    json!(
        (t + Duration::seconds(seconds))
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_map_to_their_events_field_by_field() {
    let sb = sandbox().await;
    let c = connector(&sb.url);
    let out = run(&c, "orders", klaviyo(None)).await;
    assert!(out.rejected.is_empty(), "{:#?}", out.rejected);
    // The products of a page of orders (at most 20 orders, 4 line items each) are looked
    // up in one request: never more product requests than order pages.
    let stats: Value = reqwest::get(format!("{}/commercetools/_admin/stats", sb.url))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    let requests = |resource: &str| -> u64 {
        stats["requests"]["by_resource"][resource]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
    };
    assert!(
        requests("products") > 0 && requests("products") <= requests("orders"),
        "{stats:#}"
    );
    let events = by_id(&out.rows["klaviyo.event"]);
    let mut expected_ids = BTreeSet::new();
    let mut with_categories = 0;
    for id in sb.project.ids(Resource::Orders) {
        let order = sb.project.get(Resource::Orders, &id).expect("order");
        let items = order["lineItems"].as_array().expect("line items");
        let placed_id = format!("Placed Order:{id}");
        let placed = &events[&placed_id][1];
        expected_ids.insert(placed_id);
        assert_eq!(placed["time"], order["createdAt"]);
        assert_eq!(placed["unique_id"], json!(id));
        assert_eq!(placed["value"], json!(money(&order["totalPrice"])));
        let mut profile = serde_json::Map::new();
        profile.insert("email".into(), order["customerEmail"].clone());
        if let Some(customer) = order.get("customerId") {
            profile.insert("external_id".into(), customer.clone());
        }
        assert_eq!(
            placed["profile"]["data"]["attributes"],
            Value::Object(profile)
        );
        let props = &placed["properties"];
        assert_eq!(props["orderState"], order["orderState"]);
        assert_eq!(props["totalPrice"], order["totalPrice"]);
        let mut names: Vec<String> = Vec::new();
        for item in items
            .iter()
            .chain(order["customLineItems"].as_array().expect("custom"))
        {
            let name = en(&item["name"]);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        assert_eq!(props["ItemNames"], json!(names), "{id}");
        let mut crumbs: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        for item in items {
            let pid = item["productId"].as_str().expect("productId");
            if seen.insert(pid) {
                for crumb in expected_crumbs(&sb.project, pid) {
                    if !crumbs.contains(&crumb) {
                        crumbs.push(crumb);
                    }
                }
            }
        }
        if !crumbs.is_empty() {
            with_categories += 1;
        }
        assert_eq!(props["Categories"], json!(crumbs), "{id}");
        for (i, item) in items.iter().enumerate() {
            let item_id = item["id"].as_str().expect("line item id");
            let key = format!("Ordered Product:{item_id}");
            let e = &events[&key][1];
            expected_ids.insert(key);
            assert_eq!(e["time"], time_plus(&order["createdAt"], i as i64 + 1));
            assert_eq!(e["value"], json!(money(&item["totalPrice"])));
            assert_eq!(e["unique_id"], json!(item_id));
            assert_eq!(e["properties"]["productId"], item["productId"]);
            assert_eq!(e["properties"]["quantity"], item["quantity"]);
            assert_eq!(e["profile"], placed["profile"]);
        }
        let state = match order["orderState"].as_str() {
            Some("Confirmed" | "Complete") => Some("Fulfilled Order"),
            Some("Cancelled") => Some("Cancelled Order"),
            _ => None,
        };
        if let Some(metric) = state {
            let key = format!("{metric}:{id}");
            let e = &events[&key][1];
            expected_ids.insert(key);
            assert_eq!(
                e["time"],
                time_plus(&order["createdAt"], items.len() as i64 + 1)
            );
            assert_eq!(e["properties"], placed["properties"]);
            assert_eq!(e["value"], placed["value"]);
            assert_eq!(e["unique_id"], json!(id));
        }
    }
    assert_eq!(
        events.keys().cloned().collect::<BTreeSet<_>>(),
        expected_ids
    );
    assert!(with_categories > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn categories_are_named_by_their_ancestors() {
    let sb = sandbox().await;
    let c = connector(&sb.url);
    let out = run(&c, "categories", klaviyo(None)).await;
    assert!(out.rejected.is_empty(), "{:#?}", out.rejected);
    let rows = by_id(&out.rows["klaviyo.catalog-category"]);
    let ids = sb.project.ids(Resource::Categories);
    assert_eq!(rows.len(), ids.len());
    let mut nested = 0;
    for id in ids {
        let category = sb.project.get(Resource::Categories, &id).expect("category");
        let row = &rows[&format!("$custom:::$default:::{id}")];
        assert_eq!(row[1], "upsert");
        let ancestors = category["ancestors"].as_array().expect("ancestors");
        if !ancestors.is_empty() {
            nested += 1;
        }
        let mut names: Vec<String> = ancestors
            .iter()
            .map(|a| {
                en(&sb
                    .project
                    .get(Resource::Categories, a["id"].as_str().expect("id"))
                    .expect("ancestor")["name"])
            })
            .collect();
        names.push(en(&category["name"]));
        assert_eq!(
            row[2],
            json!({"external_id": id, "name": names.join(" > "),
                   "integration_type": "$custom", "catalog_type": "$default"})
        );
    }
    assert!(nested > 0);
}

/// The amount of the price a variant shows in EUR now: the generated validity ranges
/// lie in the past, so only undated EUR prices without customer group qualify.
fn eur_price(variant: &Value) -> Option<f64> {
    variant["prices"]
        .as_array()
        .expect("prices")
        .iter()
        .find(|p| {
            p["value"]["currencyCode"] == "EUR"
                && p.get("customerGroup").is_none()
                && p.get("validFrom").is_none()
                && p.get("validUntil").is_none()
        })
        .map(|p| money(&p["value"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_products_map_to_items_and_variants_and_the_unpriced_are_rejected() {
    let sb = sandbox().await;
    let c = connector(&sb.url);
    let out = run(&c, "products", klaviyo(Some("EUR"))).await;
    let items = by_id(
        out.rows
            .get("klaviyo.catalog-item")
            .map_or(&[][..], Vec::as_slice),
    );
    let variants = by_id(
        out.rows
            .get("klaviyo.catalog-variant")
            .map_or(&[][..], Vec::as_slice),
    );
    let rejected: BTreeMap<&str, &str> = out
        .rejected
        .iter()
        .map(|r| (r.source.as_str(), r.error.as_str()))
        .collect();
    let mut expected_items = BTreeSet::new();
    let mut expected_variants = BTreeSet::new();
    let mut expected_rejects = BTreeSet::new();
    for id in sb.project.ids(Resource::ProductProjections) {
        let p = sb
            .project
            .get(Resource::ProductProjections, &id)
            .expect("projection");
        let master = &p["masterVariant"];
        let item_id = format!("$custom:::$default:::{id}");
        let Some(price) = eur_price(master) else {
            let source = format!("commercetools products {id}");
            assert!(
                rejected
                    .get(source.as_str())
                    .is_some_and(|e| e.contains("EUR")),
                "{source}"
            );
            expected_rejects.insert(source);
            assert!(!items.contains_key(&item_id));
            continue;
        };
        expected_items.insert(item_id.clone());
        let item = &items[&item_id];
        assert_eq!(item[1], "upsert");
        let a = &item[2];
        assert_eq!(a["external_id"], json!(id));
        assert_eq!(a["title"], json!(en(&p["name"])));
        assert_eq!(
            a["description"],
            json!(p.get("description").map(en).unwrap_or_default())
        );
        assert_eq!(
            a["url"],
            json!(TEMPLATE.replace("{{productSlug}}", &en(&p["slug"])))
        );
        assert_eq!(a["price"], json!(price));
        assert_eq!(a["published"], true);
        assert_eq!(a.get("image_full_url"), master["images"][0].get("url"));
        let mut categories: Vec<String> = Vec::new();
        let refs = p["categories"].as_array().expect("categories");
        let ancestors = refs.iter().flat_map(|r| {
            sb.project
                .get(Resource::Categories, r["id"].as_str().expect("id"))
                .expect("category")["ancestors"]
                .as_array()
                .expect("ancestors")
                .clone()
        });
        for r in refs.iter().cloned().chain(ancestors) {
            let cid = format!("$custom:::$default:::{}", r["id"].as_str().expect("id"));
            if !categories.contains(&cid) {
                categories.push(cid);
            }
        }
        let related: Vec<String> = item[3]["categories"]["data"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|x| x["id"].as_str().expect("id").to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(related, categories, "{id}");
        assert!(
            out.scoped.contains(&item_id),
            "{id}: its variants are replaced"
        );
        let others = p["variants"].as_array().expect("variants");
        for v in std::iter::once(master).chain(others) {
            let sku = v["sku"].as_str().expect("generated variants have SKUs");
            let vid = format!("$custom:::$default:::{sku}");
            match eur_price(v) {
                Some(vp) => {
                    expected_variants.insert(vid.clone());
                    let row = &variants[&vid];
                    assert_eq!(row[2], json!(item_id));
                    let va = &row[3];
                    assert_eq!(va["sku"], json!(sku));
                    assert_eq!(va["external_id"], json!(sku));
                    assert_eq!(va["price"], json!(vp));
                    assert_eq!(va["title"], a["title"]);
                    assert_eq!(va["url"], a["url"]);
                    assert_eq!(va["inventory_quantity"], json!(0.0));
                    assert_eq!(va["inventory_policy"], 1);
                    assert_eq!(va.get("image_full_url"), v["images"][0].get("url"));
                    assert_eq!(
                        row[4],
                        json!({"item": {"data": {"type": "catalog-item", "id": item_id}}})
                    );
                }
                None => {
                    let source = format!("commercetools products {id} variant {}", v["id"]);
                    assert!(rejected.contains_key(source.as_str()), "{source}");
                    expected_rejects.insert(source);
                }
            }
        }
    }
    assert_eq!(
        items.keys().cloned().collect::<BTreeSet<_>>(),
        expected_items
    );
    assert_eq!(
        variants.keys().cloned().collect::<BTreeSet<_>>(),
        expected_variants
    );
    assert_eq!(
        rejected
            .keys()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        expected_rejects
    );
    assert!(!expected_items.is_empty() && !expected_rejects.is_empty());
}

fn placed_orders(out: &ConnectorRun) -> BTreeSet<String> {
    out.rows["klaviyo.event"]
        .iter()
        .filter_map(|r| {
            r[0].as_str()?
                .strip_prefix("Placed Order:")
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_jobs_push_exactly_the_ids_or_the_orders_after_start_id() {
    let sb = sandbox().await;
    let c = connector(&sb.url);
    let all = sb.project.ids(Resource::Orders);
    let chosen: BTreeSet<String> = [3, 77, 150, 399].iter().map(|i| all[*i].clone()).collect();
    let mut params = klaviyo(None);
    params["ids"] = json!(
        chosen
            .iter()
            .chain(["no-such-order".to_string()].iter())
            .collect::<Vec<_>>()
    );
    let out = run(&c, "orders", params).await;
    assert_eq!(placed_orders(&out), chosen);

    let start = all[250].clone();
    let mut params = klaviyo(None);
    params["start_id"] = json!(start);
    let out = run(&c, "orders", params).await;
    let after: BTreeSet<String> = all[251..].iter().cloned().collect();
    assert_eq!(placed_orders(&out), after);

    let customers = sb.project.ids(Resource::Customers);
    let mut params = klaviyo(None);
    params["ids"] = json!([customers[5]]);
    let out = run(&c, "customers", params).await;
    assert_eq!(out.rows["klaviyo.profile"].len(), 1);
    assert_eq!(out.rows["klaviyo.profile"][0][0], json!(customers[5]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_lock_object_is_found_while_it_exists() {
    let sb = sandbox().await;
    let settings = settings(&sb.url);
    let key = sluice_connectors::commercetools::legacy_lock_key("orders").expect("key");
    assert_eq!(key, "orderFullSync");
    assert_eq!(
        sluice_connectors::commercetools::legacy_lock(&settings, "default", key)
            .await
            .expect("lookup"),
        None
    );
    let project = sluice_sandbox::commercetools::DEFAULT_PROJECT_KEY;
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/oauth/token", sb.url))
        .basic_auth(
            sluice_sandbox::commercetools::DEFAULT_CLIENT_ID,
            Some(sluice_sandbox::commercetools::DEFAULT_CLIENT_SECRET),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = token["access_token"].as_str().expect("access_token");
    let created = http
        .post(format!("{}/{project}/custom-objects", sb.url))
        .bearer_auth(token)
        .json(&json!({"container": "klaviyo-ct-plugin-lock", "key": key, "value": ""}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let lock = sluice_connectors::commercetools::legacy_lock(&settings, "default", key)
        .await
        .expect("lookup")
        .expect("the lock");
    assert_eq!(lock.container, "klaviyo-ct-plugin-lock");
    assert_eq!(lock.key, "orderFullSync");
    assert!(lock.created_at.is_some());
    // Another sync's lock is not this one.
    assert_eq!(
        sluice_connectors::commercetools::legacy_lock(&settings, "default", "customerFullSync")
            .await
            .expect("lookup"),
        None
    );
    assert!(
        sluice_connectors::commercetools::legacy_lock(&settings, "default", "bad/key")
            .await
            .is_err()
    );
    let deleted = http
        .delete(format!(
            "{}/{project}/custom-objects/klaviyo-ct-plugin-lock/{key}",
            sb.url
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success());
    assert_eq!(
        sluice_connectors::commercetools::legacy_lock(&settings, "default", key)
            .await
            .expect("lookup"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_example_responses_map_or_are_rejected_with_their_reason() {
    let examples = sluice_e2e::repo_root().join("../shared/specs/commercetools/examples");
    assert!(
        examples.is_dir(),
        "{} is missing (tests read ../shared)",
        examples.display()
    );
    let config = CommercetoolsConfig {
        examples_dir: Some(examples),
        ..CommercetoolsConfig::default()
    };
    let key = config.examples_project_key.clone();
    let sb = sandbox_with(config).await;
    let c = sluice_connectors::commercetools::connector(
        &settings_of(&sb.url, &key),
        &ConnectorContext::default(),
    )
    .expect("connector");

    // John Doe: no address, so no location.
    let out = run(&c, "customers", klaviyo(None)).await;
    assert!(out.rejected.is_empty(), "{:#?}", out.rejected);
    assert_eq!(
        out.rows["klaviyo.profile"],
        vec![vec![
            json!("3cdcdcc8-80c5-41bb-abb5-ac8772c9cc24"),
            json!({"email": "johndoe@example.com", "external_id": "3cdcdcc8-80c5-41bb-abb5-ac8772c9cc24",
                   "first_name": "John", "last_name": "Doe"})
        ]]
    );

    // An open order without customerEmail: its events know the customer by id.
    let out = run(&c, "orders", klaviyo(None)).await;
    assert!(out.rejected.is_empty(), "{:#?}", out.rejected);
    let events = by_id(&out.rows["klaviyo.event"]);
    let placed = &events["Placed Order:92f5a867-bf19-47ab-982c-6720a03a3921"][1];
    assert_eq!(
        placed["profile"]["data"]["attributes"],
        json!({"external_id": "7297c742-d8b0-484b-aadc-1d0ba6769dc9"})
    );
    assert_eq!(events.len(), 2, "Placed Order and one Ordered Product");

    // "Hats" names an ancestor the project does not have: rejected, not misnamed.
    let out = run(&c, "categories", klaviyo(None)).await;
    let categories = by_id(&out.rows["klaviyo.catalog-category"]);
    assert_eq!(
        categories["$custom:::$default:::1bae3aa3-1e02-49d2-b719-4c5020f50638"][2]["name"],
        "Long sleeves"
    );
    assert_eq!(out.rejected.len(), 1, "{:#?}", out.rejected);
    assert_eq!(
        out.rejected[0].source,
        "commercetools categories c2f93298-c967-44af-8c2a-d2220bf39eb2"
    );
    assert!(
        out.rejected[0].error.contains("123456"),
        "{}",
        out.rejected[0].error
    );

    // Two projections whose master variants have no SKU: items (price 0 without a
    // preferred currency), their variants rejected, their variant collections replaced.
    let out = run(&c, "products", klaviyo(None)).await;
    let items = by_id(&out.rows["klaviyo.catalog-item"]);
    assert_eq!(items.len(), 2);
    for item in items.values() {
        assert_eq!(item[2]["price"], json!(0.0));
    }
    assert!(
        out.rows
            .get("klaviyo.catalog-variant")
            .is_none_or(Vec::is_empty)
    );
    assert_eq!(out.rejected.len(), 2, "{:#?}", out.rejected);
    assert!(out.rejected.iter().all(
        |r| r.error.contains("no SKU") && r.table.as_deref() == Some("klaviyo.catalog-variant")
    ));
    assert_eq!(out.scoped.len(), 2);
}
