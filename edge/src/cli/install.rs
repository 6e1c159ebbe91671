use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ed25519_dalek::{Signer, SigningKey};
use scion_edge::service::install::install;

/// Lay out the service under a root: binary, systemd unit, default configuration (kept if
/// present), model store and inbox. `--root /` installs on this machine.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The root to install under (a device image, a test folder, or /).
    #[arg(long, value_name = "PREFIX")]
    root: PathBuf,
    /// Do not copy this binary to PREFIX/usr/bin.
    #[arg(long)]
    no_binary: bool,
    /// Also copy this ONNX Runtime library to PREFIX/usr/lib/scion/libonnxruntime.so.
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
    /// Replace an existing PREFIX/etc/scion/edge.toml with the default.
    #[arg(long)]
    overwrite_config: bool,
}

pub fn run_install(args: InstallArgs) -> Result<()> {
    let binary = if args.no_binary {
        None
    } else {
        Some(std::env::current_exe().context("cannot find this binary")?)
    };
    let layout = install(
        &args.root,
        binary.as_deref(),
        args.ort_lib.as_deref(),
        args.overwrite_config,
    )
    .with_context(|| format!("--root {}", args.root.display()))?;
    for path in &layout.written {
        println!("wrote   {}", path.display());
    }
    for path in &layout.kept {
        println!(
            "kept    {} (exists; --overwrite-config replaces it)",
            path.display()
        );
    }
    for path in &layout.folders {
        println!("created {}/", path.display());
    }
    println!(
        "then: systemctl daemon-reload && systemctl enable --now scion-edge \
         (edit etc/scion/edge.toml first)"
    );
    Ok(())
}

/// Make an ed25519 key pair for signing models: KEY (secret, mode 600) and KEY.pub (hex,
/// for `models.public_key` on the devices).
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key.
    #[arg(value_name = "KEY")]
    out: PathBuf,
}

pub fn run_keygen(args: KeygenArgs) -> Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("/dev/urandom")?;
    let key = SigningKey::from_bytes(&seed);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .with_context(|| format!("{} (it must not exist yet)", args.out.display()))?;
    std::io::Write::write_all(&mut file, format!("{}\n", hex::encode(seed)).as_bytes())?;
    let public = hex::encode(key.verifying_key().to_bytes());
    let pub_path = PathBuf::from(format!("{}.pub", args.out.display()));
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| pub_path.display().to_string())?;
    println!("{public}");
    Ok(())
}

/// Sign a model for devices that require signatures: writes MODEL.sig (hex).
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The secret key from `scion-edge keygen`.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// The model to sign.
    #[arg(value_name = "MODEL")]
    model: PathBuf,
}

pub fn run_sign(args: SignArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("--key {}", args.key.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("--key {}: not a scion-edge keygen key", args.key.display()))?;
    let bytes = std::fs::read(&args.model).with_context(|| args.model.display().to_string())?;
    let signature = SigningKey::from_bytes(&seed).sign(&bytes);
    let out = PathBuf::from(format!("{}.sig", args.model.display()));
    std::fs::write(&out, format!("{}\n", hex::encode(signature.to_bytes())))
        .with_context(|| out.display().to_string())?;
    println!("{}", out.display());
    Ok(())
}
