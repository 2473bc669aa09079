//! Model presets: the tensor names and shapes of a Llama-style state dict.
//!
//! `openllama-3b` is the exact OpenLLaMA-3B state dict
//! (openlm-research/open_llama_3b: hidden 3200, intermediate 8640, 26 layers,
//! vocab 32000, untied `lm_head`): 237 tensors, 3,426,473,600 parameters.
//! `tiny` has the same structure at a size that runs in seconds.

use anyhow::{bail, Result};

/// The dimensions of a Llama-style model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The preset's name, as `--preset` takes it.
    pub name: &'static str,
    /// Width of the hidden state.
    pub hidden: usize,
    /// Width of the MLP's inner layer.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Vocabulary size (rows of the embedding and of `lm_head`).
    pub vocab: usize,
}

/// OpenLLaMA-3B's dimensions.
pub const OPENLLAMA_3B: Preset = Preset {
    name: "openllama-3b",
    hidden: 3200,
    intermediate: 8640,
    layers: 26,
    vocab: 32000,
};

/// A model of the same structure that saves and loads in seconds.
pub const TINY: Preset = Preset {
    name: "tiny",
    hidden: 256,
    intermediate: 688,
    layers: 2,
    vocab: 1000,
};

/// Every preset `--preset` can name.
pub const PRESETS: [Preset; 2] = [OPENLLAMA_3B, TINY];

/// One tensor of a preset: its state-dict name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name in the state dict, e.g. `model.layers.0.mlp.up_proj.weight`.
    pub name: String,
    /// Extent of each dimension.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Elements in the tensor.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Preset {
    /// The preset called `name`.
    pub fn by_name(name: &str) -> Result<Preset> {
        match PRESETS.iter().find(|p| p.name == name) {
            Some(p) => Ok(*p),
            None => bail!(
                "unknown preset `{name}`; available presets: {}",
                PRESETS.map(|p| p.name).join(", ")
            ),
        }
    }

    /// The preset with only its first `layers` decoder layers.
    pub fn with_layers(self, layers: usize) -> Result<Preset> {
        if layers > self.layers {
            bail!(
                "--layers {layers}: preset {} has only {} decoder layers",
                self.name,
                self.layers
            );
        }
        Ok(Preset { layers, ..self })
    }

    /// Every tensor, in the order the Hugging Face model defines them.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (h, i) = (self.hidden, self.intermediate);
        let spec = |name: String, shape: &[usize]| TensorSpec {
            name,
            shape: shape.to_vec(),
        };
        let mut out = vec![spec("model.embed_tokens.weight".into(), &[self.vocab, h])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for proj in ["q", "k", "v", "o"] {
                out.push(spec(format!("{p}.self_attn.{proj}_proj.weight"), &[h, h]));
            }
            out.push(spec(format!("{p}.mlp.gate_proj.weight"), &[i, h]));
            out.push(spec(format!("{p}.mlp.up_proj.weight"), &[i, h]));
            out.push(spec(format!("{p}.mlp.down_proj.weight"), &[h, i]));
            out.push(spec(format!("{p}.input_layernorm.weight"), &[h]));
            out.push(spec(format!("{p}.post_attention_layernorm.weight"), &[h]));
        }
        out.push(spec("model.norm.weight".into(), &[h]));
        out.push(spec("lm_head.weight".into(), &[self.vocab, h]));
        out
    }

    /// Parameters in all its tensors.
    pub fn parameters(&self) -> usize {
        self.tensors().iter().map(TensorSpec::elements).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openllama_3b_has_237_tensors_and_3_426_473_600_parameters() {
        let t = OPENLLAMA_3B.tensors();
        assert_eq!(t.len(), 237);
        assert_eq!(OPENLLAMA_3B.parameters(), 3_426_473_600);
        let find = |n: &str| t.iter().find(|s| s.name == n).map(|s| s.shape.clone());
        assert_eq!(find("model.embed_tokens.weight"), Some(vec![32000, 3200]));
        assert_eq!(find("lm_head.weight"), Some(vec![32000, 3200]));
        assert_eq!(
            find("model.layers.25.mlp.down_proj.weight"),
            Some(vec![3200, 8640])
        );
        assert_eq!(
            find("model.layers.0.mlp.gate_proj.weight"),
            Some(vec![8640, 3200])
        );
        assert_eq!(
            find("model.layers.7.input_layernorm.weight"),
            Some(vec![3200])
        );
        assert_eq!(find("model.norm.weight"), Some(vec![3200]));
        assert!(find("model.layers.26.input_layernorm.weight").is_none());
    }

    #[test]
    fn openllama_3b_per_layer_and_truncated_counts() {
        // 123,910,400 parameters per decoder layer.
        let one = OPENLLAMA_3B.with_layers(1).expect("1 layer");
        let two = OPENLLAMA_3B.with_layers(2).expect("2 layers");
        assert_eq!(two.parameters() - one.parameters(), 123_910_400);
        assert_eq!(one.tensors().len(), 12);
        assert_eq!(two.tensors().len(), 21);
        assert_eq!(two.parameters(), 452_624_000);
        assert!(OPENLLAMA_3B.with_layers(27).is_err());
    }

    #[test]
    fn unknown_preset_names_the_available_ones() {
        let e = Preset::by_name("gpt5").unwrap_err().to_string();
        assert!(e.contains("openllama-3b") && e.contains("tiny"), "{e}");
    }
}
