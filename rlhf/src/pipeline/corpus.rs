//! The pretraining corpus: the five public-domain books bundled in data/pretrain, compiled into
//! the binary so that the pipeline needs no files at run time. The last 5% of each book is held
//! out from every stage (pretraining and PPO-ptx alike): the text of the alignment tax.

use anyhow::Result;
use models::tokens::TokenFile;
use models::Tokenizer;
use std::path::{Path, PathBuf};

pub const BOOKS: &[(&str, &str)] = &[
    ("Alice's Adventures in Wonderland", include_str!("../../../data/pretrain/gutenberg_11_alice_in_wonderland.txt")),
    ("Pride and Prejudice", include_str!("../../../data/pretrain/gutenberg_1342_pride_and_prejudice.txt")),
    ("The Adventures of Sherlock Holmes", include_str!("../../../data/pretrain/gutenberg_1661_adventures_of_sherlock_holmes.txt")),
    ("Frankenstein", include_str!("../../../data/pretrain/gutenberg_84_frankenstein.txt")),
    ("Tiny Shakespeare", include_str!("../../../data/pretrain/tinyshakespeare.txt")),
];

const HELD_OUT: f64 = 0.05;

pub struct Corpus {
    /// Training tokens (every book's first 95%, EOT between books), memory-mapped.
    pub train: TokenFile,
    /// Held-out tokens: an equal share of each book's last 5%, `held_out_tokens` in all.
    pub held_out: Vec<u32>,
}

impl Corpus {
    /// Tokenize the books into `dir/train.bin` (rewritten each time: a second or two).
    pub fn build(tok: &Tokenizer, dir: &Path, held_out_tokens: usize) -> Result<Corpus> {
        std::fs::create_dir_all(dir)?;
        let (mut train, mut held_out) = (Vec::new(), Vec::new());
        let share = held_out_tokens.div_ceil(BOOKS.len());
        for (_, text) in BOOKS {
            let ids = tok.encode(text);
            let cut = ids.len() - (ids.len() as f64 * HELD_OUT) as usize;
            train.extend_from_slice(&ids[..cut]);
            train.push(tok.eot());
            held_out.extend_from_slice(&ids[cut..(cut + share).min(ids.len())]);
        }
        held_out.truncate(held_out_tokens);
        let path: PathBuf = dir.join("train.bin");
        TokenFile::write(&path, &train)?;
        Ok(Corpus { train: TokenFile::open(&path)?, held_out })
    }
}
