-- commercetools (connector `commercetools`, docs/commercetools.md). Every table keeps the
-- whole resource as jsonb (nothing dropped but the customer's password hash) and typed
-- columns for what analysts query. Ids are text: commercetools ids are UUIDs, but
-- references may carry other strings. `version` is the resource's own version, the
-- loader's version column: an older copy of a resource never overwrites a newer one.
-- Money is stored as commercetools sends it (cent amount, fraction digits, currency) with
-- a generated numeric amount beside it.
CREATE SCHEMA IF NOT EXISTS commercetools;

-- GET /{projectKey}/customers
CREATE TABLE commercetools.customers (
    id                          text PRIMARY KEY,
    version                     bigint NOT NULL,
    key                         text,
    customer_number             text,
    external_id                 text,
    email                       text,
    first_name                  text,
    last_name                   text,
    company_name                text,
    is_email_verified           boolean,
    customer_group_id           text,
    default_billing_address_id  text,
    default_shipping_address_id text,
    created_at                  timestamptz,
    last_modified_at            timestamptz,
    resource                    jsonb NOT NULL,
    _sluice_job_id              uuid NOT NULL,
    _sluice_loaded_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_last_modified ON commercetools.customers (last_modified_at);
CREATE INDEX customers_email ON commercetools.customers (email);

-- customers[].addresses: one row per address, replaced with its customer.
CREATE TABLE commercetools.customer_addresses (
    customer_id         text NOT NULL,
    address_id          text NOT NULL,
    version             bigint NOT NULL,
    key                 text,
    first_name          text,
    last_name           text,
    company             text,
    street_name         text,
    street_number       text,
    postal_code         text,
    city                text,
    region              text,
    state               text,
    country             text,
    email               text,
    phone               text,
    mobile              text,
    is_default_billing  boolean NOT NULL,
    is_default_shipping boolean NOT NULL,
    is_billing          boolean NOT NULL,
    is_shipping         boolean NOT NULL,
    address             jsonb NOT NULL,
    _sluice_job_id      uuid NOT NULL,
    _sluice_loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, address_id)
);

-- GET /{projectKey}/orders
CREATE TABLE commercetools.orders (
    id                    text PRIMARY KEY,
    version               bigint NOT NULL,
    order_number          text,
    customer_id           text,
    customer_email        text,
    anonymous_id          text,
    order_state           text,
    payment_state         text,
    shipment_state        text,
    store_key             text,
    country               text,
    total_cent_amount     bigint,
    total_fraction_digits integer,
    total_currency        text,
    total                 numeric GENERATED ALWAYS AS
                          (total_cent_amount::numeric / (10::numeric ^ total_fraction_digits)) STORED,
    created_at            timestamptz,
    last_modified_at      timestamptz,
    completed_at          timestamptz,
    resource              jsonb NOT NULL,
    _sluice_job_id        uuid NOT NULL,
    _sluice_loaded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_last_modified ON commercetools.orders (last_modified_at);
CREATE INDEX orders_customer ON commercetools.orders (customer_id);

-- orders[].lineItems and orders[].customLineItems: one row per item, replaced with its order.
CREATE TABLE commercetools.order_line_items (
    order_id              text NOT NULL,
    line_item_id          text NOT NULL,
    version               bigint NOT NULL,
    kind                  text NOT NULL CHECK (kind IN ('line_item', 'custom_line_item')),
    product_id            text,
    sku                   text,
    name                  text,
    quantity              bigint,
    price_cent_amount     bigint,
    total_cent_amount     bigint,
    fraction_digits       integer,
    currency              text,
    total                 numeric GENERATED ALWAYS AS
                          (total_cent_amount::numeric / (10::numeric ^ fraction_digits)) STORED,
    line_item             jsonb NOT NULL,
    _sluice_job_id        uuid NOT NULL,
    _sluice_loaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, line_item_id)
);
CREATE INDEX order_line_items_sku ON commercetools.order_line_items (sku);

-- GET /{projectKey}/categories
CREATE TABLE commercetools.categories (
    id                text PRIMARY KEY,
    version           bigint NOT NULL,
    key               text,
    name              text,
    slug              text,
    parent_id         text,
    order_hint        text,
    ancestor_ids      jsonb,
    created_at        timestamptz,
    last_modified_at  timestamptz,
    resource          jsonb NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);

-- GET /{projectKey}/product-projections (current, or staged with `--staged`)
CREATE TABLE commercetools.products (
    id                text PRIMARY KEY,
    version           bigint NOT NULL,
    key               text,
    product_type_id   text,
    name              text,
    slug              text,
    published         boolean,
    category_ids      jsonb,
    created_at        timestamptz,
    last_modified_at  timestamptz,
    resource          jsonb NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_last_modified ON commercetools.products (last_modified_at);

-- products' masterVariant and variants: one row per variant, replaced with its product.
CREATE TABLE commercetools.product_variants (
    product_id        text NOT NULL,
    variant_id        bigint NOT NULL,
    version           bigint NOT NULL,
    is_master         boolean NOT NULL,
    sku               text,
    key               text,
    prices            jsonb,
    images            jsonb,
    attributes        jsonb,
    variant           jsonb NOT NULL,
    _sluice_job_id    uuid NOT NULL,
    _sluice_loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, variant_id)
);
CREATE INDEX product_variants_sku ON commercetools.product_variants (sku);
