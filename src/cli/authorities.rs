//! `kca authorities list|rotate|retire`: a cluster's five CAs and their generations.
//!
//! `kca authorities rotate CLUSTER operators` is exo's `rotate-operators-ca`: a new generation
//! signs, and once the operator confirms, the old one is retired at once, revoking what it signed
//! (every kubeconfig it vouched for stops working when the proxies sync).

use std::io::IsTerminal;

use anyhow::bail;
use serde_json::{Value, json};

use super::client::{Client, ClientError};
use super::output::{Format, FormatArg, cell, print_json, render_table};
use super::settings::ConnectionArgs;

#[derive(Debug, clap::Args)]
pub struct AuthoritiesArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: AuthoritiesCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthoritiesCommand {
    /// List a cluster's CAs and their live generations (the signer is marked `*`).
    List {
        /// Cluster name or id.
        cluster: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Rotate a CA: a new generation signs; the previous one keeps verifying (`retiring`) until
    /// retired. For `operators`, offers to retire the previous generation at once.
    #[command(after_help = "Examples:\n  \
        kca authorities rotate prod operators          # asks, on a terminal, to retire the old CA\n  \
        kca authorities rotate prod operators --yes    # retire it at once, revoking what it signed\n  \
        kca authorities rotate prod control-plane      # then re-issue the components, then retire")]
    Rotate {
        /// Cluster name or id.
        cluster: String,
        /// etcd, control-plane, operators, kubelet or aggregation.
        kind: String,
        /// operators only: retire the previous generation without asking (revoking every
        /// unexpired certificate it signed).
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Retire a retiring generation: it leaves every bundle and its certificates stop verifying.
    Retire {
        /// Cluster name or id.
        cluster: String,
        /// etcd, control-plane, operators, kubelet or aggregation.
        kind: String,
        /// The generation to retire (default: the only retiring one).
        generation: Option<i32>,
        /// Revoke its unexpired, unrevoked certificates first (else the server refuses while
        /// there are any).
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation (asked only when stdin is a terminal).
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        format: FormatArg,
    },
}

pub async fn run(args: AuthoritiesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection.resolve()?)?;
    match args.command {
        AuthoritiesCommand::List { cluster, format } => {
            let authorities: Vec<Value> =
                client.get_json(&["v1", "clusters", &cluster, "authorities"]).await?;
            match format.format {
                Format::Json => print_json(&authorities)?,
                Format::Text => print!("{}", generations_table(&authorities)),
            }
        }
        AuthoritiesCommand::Rotate { cluster, kind, yes, format } => {
            let rotated: Value = client
                .post_json(&["v1", "clusters", &cluster, "authorities", &kind, "rotate"], &json!({}))
                .await?;
            let new = rotated["generation"].as_i64().unwrap_or_default();
            eprintln!("kca: the {kind} CA of {cluster} rotated: generation {new} signs from now on");
            let previous = retiring(&rotated).into_iter().filter(|g| i64::from(*g) < new).max();
            let retire_now = match previous {
                Some(old) if kind == "operators" => {
                    yes || ask(&format!(
                        "Retire generation {old} of the operators CA of {cluster} now? Every unexpired \
                         certificate it signed is revoked: those kubeconfigs stop working once the \
                         proxies sync (kca crl-sync)."
                    ))?
                }
                _ => false,
            };
            let shown = match previous {
                Some(old) if retire_now => retire(&client, &cluster, &kind, old, true).await?,
                Some(old) => {
                    eprintln!(
                        "kca: generation {old} still verifies what it signed; once that is re-issued, run \
                         `kca authorities retire {cluster} {kind} {old}`"
                    );
                    rotated
                }
                None => rotated,
            };
            show(&shown, format.format)?;
        }
        AuthoritiesCommand::Retire { cluster, kind, generation, force, yes, format } => {
            let generation = match generation {
                Some(generation) => generation,
                None => {
                    let authority: Value =
                        client.get_json(&["v1", "clusters", &cluster, "authorities", &kind]).await?;
                    match retiring(&authority)[..] {
                        [only] => only,
                        [] => bail!("the {kind} CA of {cluster} has no retiring generation: rotate it first"),
                        ref many => bail!(
                            "the {kind} CA of {cluster} has several retiring generations ({}): name one",
                            many.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
                        ),
                    }
                }
            };
            let consequence = if force {
                "its unexpired certificates are revoked, and"
            } else {
                "it leaves every CA bundle:"
            };
            if !yes
                && std::io::stdin().is_terminal()
                && !ask(&format!(
                    "Retire generation {generation} of the {kind} CA of {cluster}? {consequence} what it \
                     signed stops verifying."
                ))?
            {
                bail!("not retired");
            }
            let retired = retire(&client, &cluster, &kind, generation, force).await?;
            show(&retired, format.format)?;
        }
    }
    Ok(())
}

/// Retire one generation; the answer is the authority afterwards.
async fn retire(
    client: &Client,
    cluster: &str,
    kind: &str,
    generation: i32,
    force: bool,
) -> anyhow::Result<Value> {
    let generation_text = generation.to_string();
    let segments =
        ["v1", "clusters", cluster, "authorities", kind, "generations", &generation_text, "retire"];
    match client.post_json::<Value>(&segments, &json!({"force": force})).await {
        Ok(authority) => {
            eprintln!(
                "kca: retired generation {generation} of the {kind} CA of {cluster}{}",
                if force { " (its unexpired certificates were revoked)" } else { "" }
            );
            Ok(authority)
        }
        Err(err @ ClientError::Problem { status, .. })
            if status == reqwest::StatusCode::CONFLICT && !force =>
        {
            Err(anyhow::Error::new(err).context("pass --force to revoke them and retire it"))
        }
        Err(err) => Err(err.into()),
    }
}

/// The retiring generations of an authority.
fn retiring(authority: &Value) -> Vec<i32> {
    authority["generations"]
        .as_array()
        .map(|generations| {
            generations
                .iter()
                .filter(|g| g["state"] == "retiring")
                .filter_map(|g| g["generation"].as_i64().and_then(|n| i32::try_from(n).ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Ask a yes/no question on the terminal; no terminal means no.
fn ask(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn show(authority: &Value, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(authority),
        Format::Text => {
            print!("{}", generations_table(std::slice::from_ref(authority)));
            Ok(())
        }
    }
}

/// One row per live generation of each authority.
fn generations_table(authorities: &[Value]) -> String {
    let mut rows = Vec::new();
    for authority in authorities {
        for generation in authority["generations"].as_array().into_iter().flatten() {
            let signer = generation["generation"] == authority["generation"];
            rows.push(vec![
                cell(&authority["kind"]),
                format!("{}{}", cell(&generation["generation"]), if signer { "*" } else { "" }),
                cell(&generation["state"]),
                cell(&generation["not_after"]),
                cell(&generation["fingerprint_sha256"]),
            ]);
        }
    }
    render_table(&["KIND", "GENERATION", "STATE", "NOT AFTER", "FINGERPRINT"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signer_is_marked_and_retiring_generations_are_found() {
        let authority = json!({"kind": "operators", "generation": 2, "generations": [
            {"generation": 1, "state": "retiring", "not_after": "2036-01-01T00:00:00Z", "fingerprint_sha256": "aa"},
            {"generation": 2, "state": "active", "not_after": "2037-01-01T00:00:00Z", "fingerprint_sha256": "bb"},
        ]});
        assert_eq!(retiring(&authority), [1]);
        let table = generations_table(&[authority]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("operators   1    ") && lines[1].contains("retiring"), "{table}");
        assert!(lines[2].starts_with("operators   2*   ") && lines[2].contains("active"), "{table}");
    }
}
