//! Targets that need the trainer crate; included by the regression tests too.

use std::path::Path;

/// A safetensors embeddings file (`scion embed` output, read by `scion neighbours`).
pub fn embeddings(data: &[u8]) -> Result<(), String> {
    let embeddings = scion_trainer::represent::embedding::Embeddings::from_bytes(
        data,
        Path::new("fuzz.safetensors"),
    )
    .map_err(|e| e.to_string())?;
    for i in 0..embeddings.items.len() {
        assert_eq!(embeddings.row(i).len(), embeddings.dim);
    }
    let _ = embeddings.label_indices();
    Ok(())
}
