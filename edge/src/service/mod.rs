//! The long-running service around the frame loop: configuration, the HTTP API, MQTT,
//! the model store and its inbox, systemd integration and installation.

pub mod captures;
pub mod config;
pub mod confined;
pub mod engine_config;
pub mod hardware;
pub mod http;
pub mod inbox;
pub mod install;
pub mod mqtt;
pub mod page;
pub mod preview;
pub mod store;
pub mod systemd;
pub mod upload;

use std::path::Path;
use std::time::Duration;

use crate::model::{ContractOverrides, Model};
use crate::serve::hub::{Control, Hub, ModelInfo, Prepared};
use store::{Installed, ModelSource, ModelStore, Preparer, StoreError};

/// How long a model swap may wait for the frame loop.
const SWAP_TIMEOUT: Duration = Duration::from_secs(30);

/// Load and prepare the model at `path` (the service's first model).
pub fn prepare_file(path: &Path, prepare: &Preparer) -> anyhow::Result<Prepared> {
    let model = Model::load(path, &ContractOverrides::default())?;
    let classifier = prepare(&model).map_err(anyhow::Error::msg)?;
    let info = ModelInfo::of(&model, path, &classifier);
    Ok(Prepared { classifier, info })
}

/// Install a model into the store and hand it to the frame loop; the old model serves
/// until the loop takes the new one between two frames. Counts rejections in the metrics.
pub fn install_and_swap(
    store: &ModelStore,
    hub: &Hub,
    prepare: &Preparer,
    model: ModelSource<'_>,
    signature: Option<&[u8]>,
) -> Result<Installed, StoreError> {
    match store.install_from(model, signature, prepare) {
        Ok((prepared, installed)) => {
            let (done, taken) = crossbeam_channel::bounded(1);
            hub.ask(
                Control::Swap(Box::new(prepared), done),
                &taken,
                SWAP_TIMEOUT,
            )
            .map_err(|e| StoreError::Io {
                path: store.dir().into(),
                source: std::io::Error::other(format!(
                    "installed as the current model, but {e}; it serves after a restart"
                )),
            })?;
            tracing::info!(
                "installed {} ({}) into slot {}; {} reference outputs reproduced",
                installed.model.name,
                installed.model.id(),
                installed.slot,
                installed.references_checked
            );
            Ok(installed)
        }
        Err(e) => {
            if e.is_rejection() {
                hub.metrics().model_rejections += 1;
            }
            tracing::warn!("{e}");
            Err(e)
        }
    }
}

/// Where a service finds the images a reduced-precision engine is checked on.
#[derive(Debug, Clone, Default)]
pub struct CheckSources {
    /// A folder of images (`engine.check_images`), first choice.
    pub folder: Option<std::path::PathBuf>,
    /// The model store's reference images (named by sha256), for the card's references.
    pub references: Option<std::path::PathBuf>,
}

/// How many images of a check folder are used at most.
pub const CHECK_IMAGE_LIMIT: usize = 1000;

/// A [`Preparer`] for an engine policy: the first engine the policy accepts, a
/// reduced-precision one only after it gave the FP32 answers on the check images.
pub fn preparer(
    policy: crate::engine::Policy,
    options: crate::engine::EngineOptions,
    checks: CheckSources,
) -> std::sync::Arc<Preparer> {
    std::sync::Arc::new(move |model: &Model| {
        let check = match (&checks.folder, &checks.references) {
            _ if !policy.may_reduce_precision() => None,
            (Some(dir), _) => Some(crate::check_images::from_folder(
                model,
                dir,
                CHECK_IMAGE_LIMIT,
            )?),
            (None, Some(dir)) => Some(crate::check_images::from_references(model, dir)),
            (None, None) => None,
        };
        let selected = policy
            .select_checked(&model.spec(), &options, check.as_ref())
            .map_err(|e| format!("no engine could prepare the model: {e}"))?;
        Ok(crate::Classifier::from_selected(
            selected,
            model.card.clone(),
        ))
    })
}
