//! The control socket: `residency-agent reload` and `status` talk to the running daemon
//! over a Unix stream socket at `[agent] control_socket`.
//!
//! One request per connection, one JSON line each way:
//!
//! ```text
//! -> {"command":"reload","dry_run":false}
//! <- {"ok":true,"text":"generation 2 ...","data":{...}}
//! ```
//!
//! The socket is created mode 0600 (0660 and owned by `[agent] control_group` when
//! one is set); every connection's peer credentials (`SO_PEERCRED`) are checked as
//! well, so a permissive umask or a copied socket file grants nothing.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use client::call;
pub use server::{Access, bind, group_id, serve};

/// A request from the CLI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Reload {
        #[serde(default)]
        dry_run: bool,
    },
    Status,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// Human-readable result, printed by the CLI.
    pub text: String,
    /// Structured result, printed by `status --json`.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn error(text: impl Into<String>) -> Response {
        Response {
            ok: false,
            text: text.into(),
            data: serde_json::Value::Null,
        }
    }
}

/// A request waiting for the daemon's main loop, with where to send the answer.
/// A request, the uid of the client that sent it, and where its answer goes.
pub type Pending = (Request, u32, oneshot::Sender<Response>);
