//! `camledger links create|list|revoke`: upload links from the command line (the same
//! registry calls as `POST /v1/upload-links`). A running server sees a revocation on the
//! link's next use: every use asks the registry.

use anyhow::Context;
use clap::Subcommand;

use crate::config::{DataDirArg, ListArgs, OutputFormat};
use crate::datadir::require_ledger_dir;
use crate::registry::{parse_expires_in, Registry, MAX_LINK_UPLOADS};

#[derive(Debug, Subcommand)]
pub enum LinksCommand {
    /// Create an upload link for CAMERA and print its URL (shown once): `POST` images to it
    /// without a token until it expires or is used up.
    Create {
        /// The camera the uploads are recorded as (registered, not revoked).
        camera: String,
        /// How long it works: an ISO 8601 duration (PT1H, PT30M, P7D, P1DT12H), at most P30D.
        #[arg(long, env = "CAMLEDGER_EXPIRES_IN", value_parser = expires_in)]
        expires_in: std::time::Duration,
        /// How many images it accepts (1-10000); a multipart upload uses one per image.
        #[arg(long, env = "CAMLEDGER_MAX_UPLOADS",
              value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LINK_UPLOADS)))]
        max_uploads: u32,
        #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List upload links with their state and uses; never a secret.
    List(ListArgs),
    /// Revoke link ID (as `links list` shows it); a running server refuses it from its next use.
    Revoke {
        id: String,
        #[command(flatten)]
        data: DataDirArg,
    },
}

fn expires_in(text: &str) -> Result<std::time::Duration, String> {
    parse_expires_in(text).map_err(|e| e.to_string())
}

pub async fn run(action: LinksCommand) -> anyhow::Result<()> {
    match action {
        LinksCommand::Create { camera, expires_in, max_uploads, format, data } => {
            let registry = open(&data).await?;
            let link = registry.create_link(&camera, expires_in, max_uploads, "cli").await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&link)?),
                OutputFormat::Text => {
                    println!(
                        "created upload link {} for camera {} ({} uploads, expires {})",
                        link.id, link.camera, link.max_uploads, link.expires_at
                    );
                    println!("url (shown once; POST images to it, no token needed): {}", link.url);
                }
            }
        }
        LinksCommand::List(ListArgs { data, format }) => {
            let registry = open(&data).await?;
            let links = registry.list_links().await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&links)?),
                OutputFormat::Text => {
                    for l in links {
                        let state = serde_json::to_value(l.state)?;
                        println!(
                            "{}\t{}\t{}\tused {}/{}\texpires {}\tcreated {} by {}",
                            l.id,
                            l.camera,
                            state.as_str().unwrap_or("?"),
                            l.used,
                            l.max_uploads,
                            l.expires_at,
                            l.created_at,
                            l.created_by
                        );
                    }
                }
            }
        }
        LinksCommand::Revoke { id, data } => {
            let registry = open(&data).await?;
            registry.revoke_link(&id).await?;
            println!("revoked upload link {id}");
        }
    }
    Ok(())
}

async fn open(data: &DataDirArg) -> anyhow::Result<Registry> {
    require_ledger_dir(data)?;
    Registry::open(&data.data_dir).await.context("opening the camera registry")
}
