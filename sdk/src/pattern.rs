//! Patterns: the exec and URL globs a manifest declares, and splitting and
//! joining commands as words. A leaf module: the manifest ([`crate::manifest`])
//! holds patterns, the matcher ([`crate::capability`]) applies them.

/// A pattern or command that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("it is empty")]
    Empty,
    #[error("its quoting is unbalanced (split like a POSIX shell)")]
    Quoting,
    #[error("word {word:?} is not a valid glob: {reason}")]
    Glob { word: String, reason: String },
    #[error("'...' may only be the last word")]
    Ellipsis,
    #[error("it contains a NUL byte")]
    Nul,
}

/// One word of a command pattern.
#[derive(Debug, Clone)]
enum Word {
    Glob(glob::Pattern),
    /// `...` as the last word: any number of remaining words.
    Rest,
}

/// A parsed exec capability pattern, e.g. `systemctl restart -- *`.
///
/// Each word is a glob (`*` any run of characters within the word, `?` one
/// character, `[abc]` a class). A final `...` matches zero or more further words.
#[derive(Debug, Clone)]
pub struct CommandPattern {
    words: Vec<Word>,
}

impl CommandPattern {
    /// Parse a pattern as written in a manifest.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let raw = split_words(pattern)?;
        let last = raw.len() - 1;
        let words = raw
            .into_iter()
            .enumerate()
            .map(|(i, word)| match word.as_str() {
                "..." if i == last => Ok(Word::Rest),
                "..." => Err(PatternError::Ellipsis),
                _ => glob::Pattern::new(&word)
                    .map(Word::Glob)
                    .map_err(|e| PatternError::Glob {
                        word: word.clone(),
                        reason: e.msg.to_string(),
                    }),
            })
            .collect::<Result<_, _>>()?;
        Ok(CommandPattern { words })
    }

    /// Whether the already-split command `argv` matches.
    pub fn matches(&self, argv: &[String]) -> bool {
        let mut argv = argv.iter();
        for word in &self.words {
            match word {
                Word::Rest => return true,
                Word::Glob(glob) => match argv.next() {
                    Some(arg) if glob.matches(arg) => {}
                    _ => return false,
                },
            }
        }
        argv.next().is_none()
    }
}

/// A parsed http capability URL pattern: one glob over the whole URL.
#[derive(Debug, Clone)]
pub struct UrlPattern(glob::Pattern);

impl UrlPattern {
    /// Parse a URL pattern as written in a manifest.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        glob::Pattern::new(pattern)
            .map(UrlPattern)
            .map_err(|e| PatternError::Glob {
                word: pattern.to_string(),
                reason: e.msg.to_string(),
            })
    }

    /// Whether `url` matches.
    pub fn matches(&self, url: &str) -> bool {
        self.0.matches(url)
    }
}

/// Split a command into words like a POSIX shell (quotes honoured, nothing expanded).
pub fn split_words(command: &str) -> Result<Vec<String>, PatternError> {
    if command.contains('\0') {
        return Err(PatternError::Nul);
    }
    let words = shlex::split(command).ok_or(PatternError::Quoting)?;
    if words.is_empty() {
        return Err(PatternError::Empty);
    }
    Ok(words)
}

/// Join words into one command line, quoting each so that a POSIX shell gives
/// back exactly these words. Use it to build commands from untrusted values.
pub fn join_words<S: AsRef<str>>(words: &[S]) -> Result<String, PatternError> {
    shlex::try_join(words.iter().map(AsRef::as_ref)).map_err(|_| PatternError::Nul)
}
