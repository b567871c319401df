//! The tokenizer side of a decoder model: prompts to ids, ids to text, and its end tokens.

use crate::error::{AiError, Result};
use crate::files::ModelFiles;
use crate::generate::TextCodec;
use crate::timing::{time, Phase};
use tokenizers::Tokenizer;

pub struct DecoderTokenizer {
    tokenizer: Tokenizer,
    /// Characters in the vocabulary's longest token (text::worth_reading).
    longest_token: usize,
    /// Every token that ends generation (Llama 3 has several); the first is the chat templates' eos_token.
    end_ids: Vec<u32>,
}

impl DecoderTokenizer {
    pub fn new(mut tokenizer: Tokenizer, end_ids: Vec<u32>) -> Result<Self> {
        // Prompts are checked against the context size, never silently cut.
        tokenizer.with_truncation(None).map_err(|e| AiError::corrupt(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        let longest_token = crate::text::longest_token(&tokenizer);
        Ok(DecoderTokenizer { tokenizer, longest_token, end_ids })
    }

    /// Reads `tokenizer.json` of a save_pretrained directory.
    pub fn from_dir(files: &ModelFiles, end_ids: Vec<u32>) -> Result<Self> {
        let path = files.dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| AiError::corrupt(format!("cannot read {}: {e}", path.display())))?;
        Self::new(tokenizer, end_ids)
    }
}

impl TextCodec for DecoderTokenizer {
    fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = time(Phase::Tokenize, || self.tokenizer.encode(prompt, true))
            .map_err(|e| AiError::invalid(format!("cannot tokenize the prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        time(Phase::Decode, || self.tokenizer.decode(ids, true))
            .map_err(|e| AiError::internal(format!("cannot decode tokens: {e}")))
    }

    fn eos_id(&self) -> Option<u32> {
        self.end_ids.first().copied()
    }

    fn is_end(&self, id: u32) -> bool {
        self.end_ids.contains(&id)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    fn longest_token(&self) -> usize {
        self.longest_token
    }
}
