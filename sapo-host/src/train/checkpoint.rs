//! Checkpoints: everything a run needs to continue bit for bit.
//!
//! `checkpoints/step-N/` holds the weight sets as safetensors (`policy`,
//! `ema`, `reference`, `optimizer` moments), `state.bin` (the rest of the run
//! state as postcard behind a magic, a format version, a CRC-32 and a
//! length), and `manifest.json`, written last, listing every file with its
//! size and CRC-32. A directory is a checkpoint only once its manifest
//! exists and every listed file matches it. Files are written to a `.tmp-`
//! directory which is renamed into place, so a crash mid-save leaves the
//! previous checkpoints untouched; old checkpoints beyond the limit are
//! deleted only after the new one is complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::TrainBackend;
use anyhow::{Context, Result, anyhow, bail};
use safetensors::{Dtype, SafeTensors};
use sapo_core::model::{LlamaConfig, LlamaParams};

/// The first bytes of `state.bin`.
pub const STATE_MAGIC: &[u8; 8] = b"SAPOSTAT";
/// The version of the checkpoint layout and of `state.bin`'s payload.
pub const FORMAT_VERSION: u32 = 3;

/// One file of a checkpoint as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// File name inside the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 of the contents.
    pub crc32: u32,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format: u32,
    /// The sapo version that wrote it.
    pub sapo_version: String,
    /// Optimizer steps taken when it was written.
    pub step: u64,
    /// Every file, in writing order.
    pub files: Vec<ManifestEntry>,
}

fn write_file(dir: &Path, name: &str, bytes: &[u8], entries: &mut Vec<ManifestEntry>) -> Result<()> {
    // Test hook: widen the window in which a kill lands inside a save.
    if let Some(ms) = std::env::var("SAPO_DEBUG_SAVE_PAUSE_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let path = dir.join(name);
    let mut file = File::create(&path).with_context(|| format!("{}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("{}", path.display()))?;
    file.sync_all().with_context(|| format!("{}", path.display()))?;
    entries.push(ManifestEntry { name: name.to_string(), bytes: bytes.len() as u64, crc32: crc32fast::hash(bytes) });
    Ok(())
}

/// Weight sets and state to save.
#[derive(Debug)]
pub struct CheckpointParts<'a, B: TrainBackend> {
    /// Named weight sets (`policy`, `ema`, …), each saved as `<name>.safetensors`.
    pub weights: Vec<(&'static str, &'a LlamaParams<B>)>,
    /// The postcard-serialised run state.
    pub state: Vec<u8>,
}

fn tensors_bytes<B: TrainBackend>(backend: &B, config: &LlamaConfig, params: &LlamaParams<B>) -> Result<Vec<u8>> {
    let specs = params.tensor_specs(config);
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(specs.len());
    for (spec, tensor) in specs.iter().zip(params.tensors()) {
        let values = backend.download(tensor)?;
        data.push((spec.name.clone(), spec.shape.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{e}"))?;
    safetensors::serialize(views, None).map_err(|e| anyhow!("{e}"))
}

/// `state.bin`: magic, version, CRC-32 and length of the payload, payload.
pub fn encode_state(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 24);
    bytes.extend_from_slice(STATE_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The payload of a `state.bin`, after checking its header and checksum.
///
/// # Errors
/// A wrong magic or version, a length that does not match the file, or a
/// checksum mismatch — named, never a panic or an allocation from the
/// length field.
pub fn decode_state(bytes: &[u8]) -> Result<&[u8]> {
    if bytes.len() < 24 || &bytes[..8] != STATE_MAGIC {
        bail!("not a sapo run state (bad magic)");
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        bail!("run state format version {version}, this sapo reads version {FORMAT_VERSION}");
    }
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let payload = &bytes[24..];
    if payload.len() as u64 != len {
        bail!("run state is {} bytes but its header says {len} (truncated?)", payload.len());
    }
    if crc32fast::hash(payload) != crc {
        bail!("run state checksum mismatch (corrupted)");
    }
    Ok(payload)
}

/// Writes checkpoint `step` under `run_dir/checkpoints/` and keeps the newest
/// `keep` complete ones (0 keeps all).
///
/// # Errors
/// An I/O or backend error; the previous checkpoints are untouched then.
pub fn save<B: TrainBackend>(
    backend: &B,
    config: &LlamaConfig,
    run_dir: &Path,
    step: u64,
    parts: &CheckpointParts<'_, B>,
    keep: usize,
) -> Result<PathBuf> {
    let root = run_dir.join("checkpoints");
    std::fs::create_dir_all(&root).with_context(|| format!("{}", root.display()))?;
    let final_dir = root.join(format!("step-{step}"));
    let temporary = root.join(format!(".tmp-step-{step}"));
    let _ = std::fs::remove_dir_all(&temporary);
    std::fs::create_dir_all(&temporary).with_context(|| format!("{}", temporary.display()))?;
    let mut entries = Vec::new();
    for (name, params) in &parts.weights {
        let bytes = tensors_bytes(backend, config, params)?;
        write_file(&temporary, &format!("{name}.safetensors"), &bytes, &mut entries)?;
    }
    write_file(&temporary, "state.bin", &encode_state(&parts.state), &mut entries)?;
    let manifest =
        Manifest { format: FORMAT_VERSION, sapo_version: env!("CARGO_PKG_VERSION").into(), step, files: entries };
    let text = serde_json::to_string_pretty(&manifest)?;
    write_file(&temporary, "manifest.json", text.as_bytes(), &mut Vec::new())?;
    File::open(&temporary).and_then(|d| d.sync_all()).with_context(|| format!("{}", temporary.display()))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).with_context(|| format!("{}", final_dir.display()))?;
    }
    std::fs::rename(&temporary, &final_dir).with_context(|| format!("{}", final_dir.display()))?;
    File::open(&root).and_then(|d| d.sync_all()).with_context(|| format!("{}", root.display()))?;
    if keep > 0 {
        let mut complete = list(run_dir)?;
        complete.sort();
        let excess = complete.len().saturating_sub(keep);
        for (_, dir) in complete.into_iter().take(excess) {
            std::fs::remove_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        }
    }
    Ok(final_dir)
}

/// The checkpoint directories of a run that have a manifest, `(step, dir)`.
///
/// # Errors
/// The directory cannot be listed.
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let root = run_dir.join("checkpoints");
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).with_context(|| format!("{}", root.display()))? {
        let path = entry?.path();
        let step = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("step-")?.parse().ok());
        if let Some(step) = step
            && path.join("manifest.json").exists()
        {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// A checkpoint read back and verified.
#[derive(Debug)]
pub struct Loaded<B: TrainBackend> {
    /// Where it was.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Weight sets by name.
    pub weights: BTreeMap<String, LlamaParams<B>>,
    /// The run state payload (postcard).
    pub state: Vec<u8>,
}

/// Reads and verifies the checkpoint in `dir`: every manifest file present
/// with its size and CRC-32, the state header valid, the weights complete.
///
/// # Errors
/// One line naming the file and what is wrong.
pub fn load<B: TrainBackend>(backend: &B, config: &LlamaConfig, dir: &Path) -> Result<Loaded<B>> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("{}: no manifest (an incomplete checkpoint)", manifest_path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: invalid manifest: {e}", manifest_path.display()))?;
    if manifest.format != FORMAT_VERSION {
        bail!("{}: checkpoint format {}, this sapo reads {FORMAT_VERSION}", manifest_path.display(), manifest.format);
    }
    let mut weights = BTreeMap::new();
    let mut state = None;
    for entry in &manifest.files {
        let path = dir.join(&entry.name);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("{}: listed in the manifest but unreadable", path.display()))?;
        if bytes.len() as u64 != entry.bytes {
            bail!("{}: {} bytes, the manifest says {} (truncated?)", path.display(), bytes.len(), entry.bytes);
        }
        if crc32fast::hash(&bytes) != entry.crc32 {
            bail!("{}: checksum mismatch (corrupted)", path.display());
        }
        if entry.name == "state.bin" {
            state = Some(decode_state(&bytes).with_context(|| format!("{}", path.display()))?.to_vec());
        } else if let Some(name) = entry.name.strip_suffix(".safetensors") {
            let tensors = SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let params = LlamaParams::from_host(backend, config, |spec| -> Result<Vec<f32>> {
                let view = tensors
                    .tensor(&spec.name)
                    .map_err(|_| anyhow!("{}: tensor `{}` missing", path.display(), spec.name))?;
                if view.dtype() != Dtype::F32 || view.shape() != spec.shape.as_slice() {
                    bail!("{}: tensor `{}` has the wrong dtype or shape", path.display(), spec.name);
                }
                Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
            })?;
            weights.insert(name.to_string(), params);
        }
    }
    let state = state.ok_or_else(|| anyhow!("{}: the manifest lists no state.bin", manifest_path.display()))?;
    Ok(Loaded { dir: dir.to_path_buf(), manifest, weights, state })
}

/// The newest complete checkpoint of a run that verifies, with the reasons
/// newer ones were skipped.
///
/// # Errors
/// No checkpoint verifies (each one's reason is in the message).
pub fn load_newest<B: TrainBackend>(
    backend: &B,
    config: &LlamaConfig,
    run_dir: &Path,
) -> Result<(Loaded<B>, Vec<String>)> {
    let mut skipped = Vec::new();
    for (_, dir) in list(run_dir)?.into_iter().rev() {
        match load(backend, config, &dir) {
            Ok(loaded) => return Ok((loaded, skipped)),
            Err(error) => skipped.push(format!("{error:#}")),
        }
    }
    if skipped.is_empty() {
        bail!("{}: no checkpoint to resume from", run_dir.join("checkpoints").display());
    }
    bail!("no checkpoint of {} verifies: {}", run_dir.display(), skipped.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_header_refuses_every_corruption() {
        let payload = b"some run state".to_vec();
        let bytes = encode_state(&payload);
        assert_eq!(decode_state(&bytes).expect("valid"), &payload[..]);
        assert!(decode_state(&bytes[..bytes.len() - 1]).unwrap_err().to_string().contains("truncated"));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode_state(&flipped).unwrap_err().to_string().contains("checksum"));
        let mut version = bytes.clone();
        version[8] = 9;
        assert!(decode_state(&version).unwrap_err().to_string().contains("version 9"));
        assert!(decode_state(b"garbage").unwrap_err().to_string().contains("magic"));
        // A huge length field is compared, never allocated.
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_state(&huge).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode_state(&bytes);
            let mut framed = STATE_MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode_state(&framed);
        }
    }
}
