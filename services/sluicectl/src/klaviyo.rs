//! `sluicectl klaviyo delete-all categories|products --confirm-deletion categories|products`:
//! empties a Klaviyo catalogue, as the plugin's `{"deleteAll": true, "confirmDeletion": …}`
//! did — a job of the Klaviyo connector's `catalog_categories` / `catalog_items` stream
//! with `delete_all`, written by a destination of kind `klaviyo` (`docs/klaviyo-sync.md`).
//!
//! It deletes every object of that catalogue, whatever created it, which cannot be undone:
//! hence the confirmation naming the catalogue again.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::json;
use sluice_contracts::{Mode, Settings};

use crate::SyncOptions;

/// Klaviyo-side commands.
#[derive(Subcommand, Debug)]
pub enum KlaviyoCommand {
    /// Delete every catalog category or every catalog item (with its variants) of the
    /// Klaviyo account behind `--destination`.
    DeleteAll {
        /// Which catalogue.
        what: Catalogue,
        /// The same word again: the deletion cannot be undone and removes objects of every
        /// origin, not only sluice's.
        #[arg(long)]
        confirm_deletion: Option<String>,
        /// The destination of kind `klaviyo` whose account is emptied.
        #[arg(long, default_value = "klaviyo")]
        destination: String,
        /// The Klaviyo connector account that reads the catalogue.
        #[arg(long, default_value = "default")]
        account: String,
        /// Follow the job until it ends; exit non-zero unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this many seconds (the job keeps running).
        #[arg(long)]
        timeout: Option<u64>,
    },
}

/// A Klaviyo catalogue.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Catalogue {
    /// Catalog categories.
    Categories,
    /// Catalog items and their variants.
    Products,
}

impl Catalogue {
    fn word(self) -> &'static str {
        match self {
            Catalogue::Categories => "categories",
            Catalogue::Products => "products",
        }
    }

    fn stream(self) -> &'static str {
        match self {
            Catalogue::Categories => "catalog_categories",
            Catalogue::Products => "catalog_items",
        }
    }
}

pub(crate) async fn klaviyo(settings: &Settings, cmd: KlaviyoCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KlaviyoCommand::DeleteAll {
            what,
            confirm_deletion,
            destination,
            account,
            wait,
            timeout,
        } => {
            if confirm_deletion.as_deref() != Some(what.word()) {
                anyhow::bail!(
                    "deleting all {w} from the Klaviyo catalogue cannot be undone and removes {w} \
                     of every origin: add --confirm-deletion {w} to confirm",
                    w = what.word()
                );
            }
            let options = SyncOptions {
                account,
                destination,
                wait,
                strict: false,
                timeout,
            };
            crate::sync_job(
                settings,
                "klaviyo",
                what.stream(),
                json!({ "delete_all": true }),
                Mode::Full,
                &options,
            )
            .await
        }
    }
}
