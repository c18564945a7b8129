//! `slidemesh federation ...`: create the roster, propose changes, co-sign, publish.
//!
//! Roster files are JSON: the decoded roster for people to read, and the canonical bytes
//! (hex) with the signatures gathered so far, which are all that is trusted when loaded.
//! Publishing stores a valid version in this node's store; a running node adopts it within
//! a second and announces it to the federation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use slidemesh_protocol::{Member, Roster, RosterSignature, SignedRoster, TrustCode};

use crate::context::NodeContext;
use crate::datadir::{DataDir, write_atomic};
use crate::store::now_unix;

#[derive(Debug, Args)]
pub struct FederationArgs {
    #[command(subcommand)]
    command: FederationCommand,
}

#[derive(Debug, Subcommand)]
enum FederationCommand {
    /// Print this node's roster entry (trust, name, node key, addresses) as JSON.
    Member {
        /// Address peers dial, if not the configured listen addresses (repeatable)
        #[arg(long, value_name = "MULTIADDR")]
        addr: Vec<String>,
    },
    /// Propose the first roster (version 1) from member entries; signs it with this node.
    Create {
        /// The federation's name
        #[arg(long)]
        name: String,
        /// Signatures of current members needed to change the roster (k of n)
        #[arg(long)]
        quorum: u32,
        /// A member entry file from `federation member` (repeat for each trust)
        #[arg(long = "member", value_name = "FILE", required = true)]
        members: Vec<PathBuf>,
        /// Where to write the proposal
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Propose the next roster version: admit or remove members, change the quorum.
    Propose {
        /// A member entry file to admit (or to update an existing member's entry)
        #[arg(long = "add", value_name = "FILE")]
        add: Vec<PathBuf>,
        /// The ODS code of a member to remove
        #[arg(long = "remove", value_name = "ODS")]
        remove: Vec<String>,
        /// A new quorum
        #[arg(long)]
        quorum: Option<u32>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Add this node's signature to a proposal file, in place.
    Sign { file: PathBuf },
    /// Store a proposal that has enough signatures as this node's roster.
    Publish { file: PathBuf },
    /// Show the roster in force here.
    Show,
}

/// The roster file format.
#[derive(Debug, Serialize, Deserialize)]
struct RosterFile {
    /// For people; ignored when loading.
    roster: Roster,
    /// Canonical bytes, hex.
    bytes: String,
    signatures: Vec<RosterSignatureFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RosterSignatureFile {
    signer: slidemesh_protocol::NodePublicKey,
    signature: String,
}

fn write_roster_file(path: &Path, signed: &SignedRoster) -> Result<()> {
    let file = RosterFile {
        roster: signed.roster()?,
        bytes: hex::encode(&signed.bytes),
        signatures: signed
            .signatures
            .iter()
            .map(|s| RosterSignatureFile {
                signer: s.signer,
                signature: hex::encode(&s.signature),
            })
            .collect(),
    };
    write_atomic(path, serde_json::to_string_pretty(&file)?.as_bytes())
}

fn read_roster_file(path: &Path) -> Result<SignedRoster> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: RosterFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a roster file", path.display()))?;
    let signed = SignedRoster {
        bytes: hex::decode(&file.bytes).context("roster bytes are not hex")?,
        signatures: file
            .signatures
            .into_iter()
            .map(|s| {
                Ok(RosterSignature {
                    signer: s.signer,
                    signature: hex::decode(&s.signature).context("signature is not hex")?,
                })
            })
            .collect::<Result<_>>()?,
    };
    signed
        .roster()
        .with_context(|| format!("{} holds an invalid roster", path.display()))?;
    Ok(signed)
}

fn read_member(path: &Path) -> Result<Member> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a member entry", path.display()))
}

pub fn run(data: DataDir, args: FederationArgs) -> Result<()> {
    let node = NodeContext::open(data)?;
    match args.command {
        FederationCommand::Member { addr } => {
            let addrs = if addr.is_empty() {
                node.config.network.listen.clone()
            } else {
                addr
            };
            let member = Member {
                trust: node.config.node.trust.clone(),
                name: node.config.node.trust_name.clone(),
                node: node.key.public(),
                addrs,
            };
            println!("{}", serde_json::to_string_pretty(&member)?);
        }
        FederationCommand::Create {
            name,
            quorum,
            members,
            out,
        } => {
            let members = members
                .iter()
                .map(|p| read_member(p))
                .collect::<Result<Vec<_>>>()?;
            let mut roster = Roster {
                federation: name,
                version: 1,
                quorum,
                members,
                issued_at: now_unix(),
            };
            roster.normalise();
            let mut signed = SignedRoster::propose(&roster)?;
            if roster.member_by_key(&node.key.public()).is_some() {
                signed.cosign(&node.key);
            }
            write_roster_file(&out, &signed)?;
            report(&signed, None, &out)?;
        }
        FederationCommand::Propose {
            add,
            remove,
            quorum,
            out,
        } => {
            let (current, _) = node
                .store
                .current_roster()?
                .context("this node has no roster yet; start one with `federation create`")?;
            let mut next = current.clone();
            next.version += 1;
            next.issued_at = now_unix();
            for code in remove {
                let code: TrustCode = code.parse()?;
                if next.member(&code).is_none() {
                    bail!("{code} is not a member");
                }
                next.members.retain(|m| m.trust != code);
            }
            for path in add {
                let member = read_member(&path)?;
                next.members.retain(|m| m.trust != member.trust);
                next.members.push(member);
            }
            if let Some(q) = quorum {
                next.quorum = q;
            }
            next.quorum = next.quorum.min(next.members.len() as u32);
            next.normalise();
            let mut signed = SignedRoster::propose(&next)?;
            if current.member_by_key(&node.key.public()).is_some() {
                signed.cosign(&node.key);
            }
            write_roster_file(&out, &signed)?;
            report(&signed, Some(&current), &out)?;
        }
        FederationCommand::Sign { file } => {
            let mut signed = read_roster_file(&file)?;
            signed.cosign(&node.key);
            write_roster_file(&file, &signed)?;
            let current = node.store.current_roster()?.map(|(r, _)| r);
            let signing = signing_roster(&signed, current.as_ref())?;
            report(&signed, signing.as_ref(), &file)?;
        }
        FederationCommand::Publish { file } => {
            let signed = read_roster_file(&file)?;
            let current = node.store.current_roster()?.map(|(r, _)| r);
            let roster = match &current {
                None => signed.verify_genesis()?,
                Some(current) => signed.verify_successor(current)?,
            };
            node.store.put_roster(roster.version, &signed)?;
            println!(
                "published roster version {} of {} ({} members, quorum {})",
                roster.version,
                roster.federation,
                roster.members.len(),
                roster.quorum
            );
        }
        FederationCommand::Show => match node.store.current_roster()? {
            Some((roster, signed)) => println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "roster": roster,
                    "id": signed.id(),
                    "signers": signed.signatures.iter().map(|s| s.signer).collect::<Vec<_>>(),
                }))?
            ),
            None => bail!("this node has no roster yet"),
        },
    }
    Ok(())
}

/// The roster whose members must sign `signed`: the current one for a successor, none
/// (itself) for a genesis.
fn signing_roster(signed: &SignedRoster, current: Option<&Roster>) -> Result<Option<Roster>> {
    let proposed = signed.roster()?;
    Ok(if proposed.version == 1 {
        None
    } else {
        current.cloned()
    })
}

fn report(signed: &SignedRoster, current: Option<&Roster>, path: &Path) -> Result<()> {
    let missing = signed.signatures_missing(current)?;
    let roster = signed.roster()?;
    if missing == 0 {
        println!(
            "roster version {} has enough signatures; publish it on each node with: slidemesh federation publish {}",
            roster.version,
            path.display()
        );
    } else {
        println!(
            "roster version {} written to {}; {missing} more member signature(s) needed (slidemesh federation sign {})",
            roster.version,
            path.display(),
            path.display()
        );
    }
    Ok(())
}
