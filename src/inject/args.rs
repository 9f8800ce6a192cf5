//! The `inject` subcommand's flags and entry point.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Args;

use super::sidecar::Settings;
use crate::config::Mode;

/// How the injected guard is configured: shared by `inject` and `webhook`. A
/// workload's `canary-guard.io/<flag>` annotations (on the workload or its pod
/// template) override these flags for that workload.
#[derive(Clone, Debug, Args)]
pub struct SidecarArgs {
    /// Guard image.
    #[arg(long, default_value = concat!("ghcr.io/canary-guard/canary-guard:", env!("CARGO_PKG_VERSION")))]
    pub image: String,

    /// How the guard observes traffic (annotation `canary-guard.io/mode`).
    #[arg(long, value_enum, default_value = "proxy")]
    pub mode: Mode,

    /// Guard group, one per canary (default: the workload's name).
    #[arg(long)]
    pub group: Option<String>,

    /// The VirtualService that splits traffic between stable and canary.
    #[arg(long, value_name = "NAME")]
    pub virtual_service: Option<String>,

    /// The canary destination's host in the VirtualService.
    #[arg(long)]
    pub canary_host: Option<String>,

    /// The canary destination's subset in the VirtualService.
    #[arg(long)]
    pub canary_subset: Option<String>,

    /// The app's container port, by number or name (default: the first declared port).
    #[arg(long, value_name = "PORT")]
    pub app_port: Option<String>,

    /// What the guard does to the canary Deployment after a rollback (`none` or `pause`).
    #[arg(long, value_parser = ["none", "pause"])]
    pub on_rollback: Option<String>,

    /// `canary`, or `baseline` for guards on stable pods that only publish their windows
    /// (annotation `canary-guard.io/role`; a baseline workload needs the canary's group).
    #[arg(long, value_parser = ["canary", "baseline"])]
    pub role: Option<String>,
}

/// Flags of `canary-guard inject`.
#[derive(Clone, Debug, Args)]
pub struct InjectArgs {
    /// Manifests to read (multi-document YAML); `-` reads standard input.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        default_value = "-"
    )]
    pub filename: PathBuf,

    /// Proxy mode: point the Services that reach the app's port at the guard's, by port name.
    #[arg(long)]
    pub rewire_service: bool,

    /// The sidecar's settings.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

impl From<&SidecarArgs> for Settings {
    fn from(a: &SidecarArgs) -> Self {
        Settings {
            image: a.image.clone(),
            mode: a.mode,
            group: a.group.clone(),
            virtual_service: a.virtual_service.clone(),
            canary_host: a.canary_host.clone(),
            canary_subset: a.canary_subset.clone(),
            app_port: a.app_port.clone(),
            on_rollback: a.on_rollback.clone(),
            role: a.role.clone(),
            rewire_service: false,
        }
    }
}

/// Reads the manifests, injects, writes the result to standard output.
pub fn run(args: &InjectArgs) -> crate::Result<()> {
    let io_err = |context: String| move |source| crate::Error::Io { context, source };
    let input = if args.filename.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(io_err("reading standard input".into()))?;
        s
    } else {
        std::fs::read_to_string(&args.filename)
            .map_err(io_err(format!("reading {}", args.filename.display())))?
    };
    let settings = Settings {
        rewire_service: args.rewire_service,
        ..Settings::from(&args.sidecar)
    };
    let out = super::inject(&input, &settings)?;
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(io_err("writing standard output".into()))?;
    Ok(())
}
