//! Verification of a semantic-cache candidate: is the cached prompt asking
//! for the same answer as the incoming one?
//!
//! Cosine similarity alone cannot decide it. With all-MiniLM-L6-v2, "convert
//! 10 km to miles" and "convert 10 miles to km" score 0.987 while a true
//! paraphrase scores 0.861; on the cache-eval development pairs no single
//! threshold keeps false hits under 5% while hitting anything
//! (`docs/cache.md`). A hard negative is nearly always the same sentence
//! with one *specific* thing changed: a number, a name, a direction, a
//! negation, an output format, a period of time. A paraphrase changes the
//! wording but keeps every one of those. So after the nearest neighbour is
//! found, [`Verifier::check`] compares the two prompts' words and refuses
//! the hit when any of these differ:
//!
//! - **numbers** (digits, and number words from two up, in English,
//!   German, French, Spanish, Italian and Portuguese);
//! - **key terms**: names and other specific tokens (capitalised mid-sentence,
//!   containing digits or `_` or inner capitals, or a programming or human
//!   language), each of which must appear in the other prompt, accents
//!   aside, allowing one typo only in names of five letters or more written
//!   in lower case on at least one side (Iran is not Iraq);
//! - **negation** (not, never, without, avoid, prevent, …n't with or without its
//!   apostrophe, the asker's own "I don't get what…" aside, and their
//!   counterparts in German, French, Spanish, Italian, Portuguese and
//!   Chinese) and
//!   **opposites** (a small lexicon: enable/disable, add/remove,
//!   for/against, …, plus prefixed forms such as *dis*advantage);
//! - **output format**, **scope** (all/every/only/list…), **conditions**
//!   of the asker (allergic, pregnant, vegan, toddler, budget…) and
//!   **time** (months, days, periods) words;
//! - **order**: the same content words in another order, unless a whole
//!   clause moved at a comma or other boundary ("In Excel, how do I…" is
//!   "How do I… in Excel?", but "string to integer" is not "integer to
//!   string"), or two words joined by "and" or "or" swapped;
//! - **substitution**: a content word or two replaced while the rest is
//!   shared ("melting point of copper" vs "of iron"), or a thing swapped
//!   however little is shared ("cancel my subscription" vs "cancel my gym
//!   membership": `is_thing`, from WordNet). Paraphrases change more than
//!   that, or reword one word as two within the question ("substitute"
//!   vs "use instead"); typos less (one or two letters, tolerated, but in
//!   English text not between two dictionary words, "bake" and "make",
//!   nor between two short unknown ones, "gzip" and "bzip": `same_word`).
//!   Inflections pair by their Snowball stem ("differ", "difference");
//! - **qualifier**: words added on one side only, in the clause that asks
//!   or one joined to it by "and" or "or" ("return policy for shoes" vs
//!   "return policy");
//! - **script**: differing Chinese, Japanese or Korean characters (words are
//!   not space-separated there, so the checks above cannot see them);
//! - **rewording** ([`Verifier::check_at`], given the cosine): below
//!   [`REWORDED_MIN`], prompts that each have more content words of their
//!   own than they share ("handle errors in Rust" against "check if a file
//!   exists in Rust"): the words give no evidence of the same question.
//!
//! And two allowances. A copy of the question typed in a hurry (the same
//! words but for heavy typos, [`Verifier::threshold_for`]) needs
//! [`TYPO_MARGIN`] less similarity. And ([`Verifier::check_at`],
//! `backstory`) a prompt that is context followed by a question is also
//! compared by the question alone, unless the context names a number, a
//! key term, a format, a scope, a condition or a season the question does
//! not, or instructs.
//!
//! Chosen by measurement on `cache-eval/dev_pairs.tsv`, by principle rather
//! than by listing its prompts, and checked on eight sets written apart
//! from it (`second_pairs_*.tsv`; `switchyard cache calibrate` reruns
//! them).

/// Decides whether a candidate may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verifier {
    /// Refuse when at most this many content words differ on each side while
    /// at least as many are shared (0 turns the substitution check off).
    pub max_substitution: usize,
    /// Also compare a prompt that opens with context and ends in a question
    /// by that question alone ([`Verifier::check_at`]).
    pub backstory: bool,
    /// Lower the threshold by [`TYPO_MARGIN`] for a copy of the question
    /// typed in a hurry ([`Verifier::threshold_for`]).
    pub typo_variants: bool,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            max_substitution: 2,
            backstory: true,
            typo_variants: true,
        }
    }
}

/// Why two prompts are judged to ask different things.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Number,
    KeyTerm,
    Negation,
    Opposite,
    Format,
    Scope,
    Condition,
    Qualifier,
    Time,
    Order,
    Substitution,
    Script,
    Reworded,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::KeyTerm => "key term",
            Self::Negation => "negation",
            Self::Opposite => "opposite",
            Self::Format => "format",
            Self::Scope => "scope",
            Self::Condition => "condition",
            Self::Qualifier => "qualifier",
            Self::Time => "time",
            Self::Order => "order",
            Self::Substitution => "substitution",
            Self::Script => "script",
            Self::Reworded => "reworded",
        }
    }
}

#[rustfmt::skip]
const STOP: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does",
    "did", "doing", "have", "has", "had", "having", "i", "me", "my", "we", "our", "you", "your",
    "u", "ur", "he", "she", "it", "its", "they", "them", "their", "this", "that", "these",
    "those", "what", "whats", "what's", "which", "who", "whom", "whose", "when", "where", "why",
    "how", "can", "could", "would", "should", "will", "shall", "may", "might", "must", "to",
    "of", "in", "on", "at", "by", "for", "from", "with", "about", "as", "into", "onto", "and",
    "or", "but", "if", "then", "so", "than", "too", "very", "just", "also", "really", "please",
    "thanks", "thank", "thx", "hi", "hello", "hey", "ok", "okay", "oh", "good", "morning",
    "evening", "afternoon", "kindly", "quick", "question", "next", "one", "there", "here",
    "any", "some", "something", "anything", "tell", "know", "want", "wanna", "like", "need",
    "give", "let", "let's", "i'm", "i've", "i'd", "i'll", "it's", "that's", "there's", "im",
    "ive", "id", "ill", "dont", "pls", "plz", "sup", "yo", "bro", "you're", "youre", "again",
    "quickly", "help", "out", "up", "get", "when's", "where's", "who's", "how's", "here's",
    "using", "since", "because", "via", "between", "w", "vs", "versus", "and/or",
    // Function words as chat spells them.
    "q", "k", "shud", "wud", "cud", "r", "gonna", "gotta", "kinda", "sorta", "tryna", "gimme", "dunno",
    "ya", "yall", "y'all",
];
#[rustfmt::skip]
const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"), ("six", "6"),
    ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"), ("eleven", "11"),
    ("twelve", "12"), ("thirteen", "13"), ("fourteen", "14"), ("fifteen", "15"),
    ("sixteen", "16"), ("seventeen", "17"), ("eighteen", "18"), ("nineteen", "19"),
    ("twenty", "20"), ("twice", "2"), ("hundred", "100"), ("thousand", "1000"),
    ("million", "1000000"), ("half", "0.5"), ("dozen", "12"),
    // German, French, Spanish, Italian, Portuguese; not those that are also
    // other words ("due", "sei", "dos", "cent", "neuf", "sept", "mil", "elf").
    ("zwei", "2"), ("drei", "3"), ("vier", "4"), ("fünf", "5"), ("sechs", "6"), ("sieben", "7"),
    ("acht", "8"), ("neun", "9"), ("zehn", "10"), ("zwölf", "12"), ("zwanzig", "20"),
    ("hundert", "100"), ("tausend", "1000"),
    ("deux", "2"), ("trois", "3"), ("quatre", "4"), ("cinq", "5"), ("huit", "8"), ("dix", "10"),
    ("douze", "12"), ("vingt", "20"), ("mille", "1000"),
    ("tres", "3"), ("cuatro", "4"), ("cinco", "5"), ("seis", "6"), ("siete", "7"), ("ocho", "8"),
    ("nueve", "9"), ("diez", "10"), ("doce", "12"), ("veinte", "20"), ("cien", "100"),
    ("tre", "3"), ("quattro", "4"), ("cinque", "5"), ("sette", "7"), ("nove", "9"),
    ("dieci", "10"), ("dodici", "12"), ("cento", "100"),
    ("dois", "2"), ("duas", "2"), ("três", "3"), ("sete", "7"), ("oito", "8"), ("dez", "10"),
    ("doze", "12"), ("vinte", "20"), ("cem", "100"),
];
/// Capitalised words that name nothing.
#[rustfmt::skip]
const FUNCTION_CAPS: &[&str] = &[
    "i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "hi", "hello", "hey", "please", "thanks",
    "thank",
];
/// Greetings and thanks in the other languages the cache-eval sets use:
/// capitalised, they name nothing; added to a request, they narrow nothing.
#[rustfmt::skip]
const GREETINGS: &[&str] = &[
    "hallo", "danke", "dank", "vielen", "bitte", "hola", "gracias", "bonjour", "merci", "salut",
    "ciao", "grazie",
];
/// Programming and human languages: key terms even in lower case.
#[rustfmt::skip]
const LANGUAGES: &[&str] = &[
    "python", "rust", "java", "javascript", "typescript", "go", "golang", "c", "c++", "c#",
    "ruby", "php", "swift", "kotlin", "scala", "bash", "sql", "html", "css", "r", "perl",
    "haskell", "lua", "dart", "julia", "matlab", "powershell", "js", "ts", "py", "cpp", "csharp",
    "english", "spanish", "french",
    "german", "chinese", "japanese", "italian", "portuguese", "russian", "korean", "arabic",
    "hindi", "dutch", "mandarin",
];
/// Short and long names of the same language or platform: one matches the other.
#[rustfmt::skip]
const ALIASES: &[(&str, &str)] = &[
    ("js", "javascript"), ("ts", "typescript"), ("py", "python"), ("golang", "go"),
    ("cpp", "c++"), ("csharp", "c#"), ("mac", "macos"),
];

/// The other name of a language, if it has one.
fn alias(low: &str) -> Option<&'static str> {
    ALIASES
        .iter()
        .find_map(|&(a, b)| (a == low).then_some(b).or((b == low).then_some(a)))
}

#[rustfmt::skip]
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "don't", "doesn't", "didn't", "isn't", "aren't", "wasn't", "weren't",
    "can't", "cannot", "won't", "wouldn't", "shouldn't", "couldn't", "without", "nor",
    "neither", "none", "nothing", "nobody", "dont", "doesnt", "didnt", "isnt", "arent",
    "wasnt", "werent", "cant", "wont", "wouldnt", "shouldnt", "couldnt", "havent", "hasnt",
    "hadnt", "w/o",
    // Verbs that say "not": "foods to avoid" are the foods not to eat.
    "avoid", "prevent",
    // German, French, Spanish, Italian, Portuguese, Chinese.
    "nicht", "kein", "keine", "keinen", "keinem", "keiner", "keines", "nie", "niemals", "ohne",
    "nichts", "weder", "ne", "pas", "jamais", "sans", "aucun", "aucune", "rien", "nunca",
    "jamás", "sin", "ningún", "ninguno", "ninguna", "nada", "tampoco", "non", "mai", "senza",
    "nessuno", "não", "sem", "nenhum", "nenhuma", "不", "没", "别", "無", "无", "未", "非",
];
#[rustfmt::skip]
const OPPOSITES: &[(&str, &str)] = &[
    ("add", "remove"), ("enable", "disable"), ("allow", "block"), ("allow", "deny"),
    ("allow", "prevent"), ("increase", "decrease"), ("increase", "reduce"),
    ("increase", "lower"), ("raise", "lower"), ("start", "stop"), ("show", "hide"),
    ("open", "close"), ("lock", "unlock"), ("install", "uninstall"), ("encrypt", "decrypt"),
    ("upload", "download"), ("import", "export"), ("buy", "sell"), ("win", "lose"),
    ("pros", "cons"), ("advantage", "disadvantage"), ("benefit", "drawback"),
    ("benefit", "risk"), ("benefit", "downside"), ("best", "worst"), ("most", "least"),
    ("more", "less"), ("more", "fewer"), ("max", "min"), ("maximum", "minimum"),
    ("before", "after"), ("first", "last"), ("cheap", "expensive"), ("fast", "slow"),
    ("faster", "slower"), ("safe", "dangerous"), ("safe", "unsafe"), ("good", "bad"),
    ("healthy", "unhealthy"), ("love", "hate"), ("true", "false"), ("gain", "lose"),
    ("join", "leave"), ("subscribe", "unsubscribe"), ("connect", "disconnect"),
    ("merge", "split"), ("compress", "decompress"), ("compress", "extract"),
    ("create", "delete"), ("zip", "unzip"), ("push", "pull"), ("send", "receive"),
    ("borrow", "lend"), ("high", "low"), ("hot", "cold"), ("up", "down"), ("make", "remove"),
    ("on", "off"), ("left", "right"), ("above", "below"), ("inside", "outside"),
    ("over", "under"), ("accept", "reject"), ("agree", "disagree"), ("like", "dislike"),
    ("with", "without"), ("for", "against"), ("next", "last"), ("next", "previous"),
    ("current", "previous"), ("current", "last"), ("include", "exclude"),
    ("positive", "negative"), ("strength", "weakness"), ("upgrade", "downgrade"),
    ("attach", "detach"), ("mount", "unmount"), ("freeze", "unfreeze"), ("follow", "unfollow"),
    ("mute", "unmute"), ("block", "unblock"), ("archive", "unarchive"),
];
#[rustfmt::skip]
const FORMAT: &[&str] = &[
    "json", "yaml", "xml", "csv", "markdown", "table", "bullet", "list", "paragraph",
    "sentence", "poem", "haiku", "limerick", "dialogue", "essay", "tweet", "email", "letter",
    "story", "song", "code", "summary", "outline", "step", "steps", "step-by-step", "word",
    "one-liner", "yes/no", "phrase", "liste", "puce", "tableau", "tabla", "lista", "absatz",
    "párrafo", "frase", "satz", "gedicht", "poème", "poema", "diagram", "chart", "numbered",
    "bulleted", "comma-separated", "line", "true/false", "multiple-choice", "fill-in-the-blank",
];
#[rustfmt::skip]
const SCOPE: &[&str] = &[
    "all", "every", "each", "both", "only", "entire", "whole", "complete", "full", "detailed",
    "brief", "briefly", "list", "name", "anywhere", "everywhere", "recursive", "recursively",
    // German, French, Spanish, Italian, Portuguese.
    "alle", "jede", "jeder", "jedes", "jeden", "beide", "nur", "ganze", "vollständige",
    "auflisten", "nenne", "tous", "toutes", "tout", "toute", "chaque", "seulement",
    "uniquement", "entier", "complet", "complète", "énumère", "énumérer", "todos", "todas",
    "todo", "toda", "cada", "ambos", "solo", "sólo", "solamente", "únicamente", "entero",
    "completo", "completa", "enumera", "enumerar", "enumere", "tutti", "tutte", "tutto",
    "ogni", "soltanto", "intero", "elenca", "elencare", "apenas", "inteiro",
];
#[rustfmt::skip]
const TIME: &[&str] = &[
    "today", "tomorrow", "yesterday", "tonight", "week", "month", "year", "day", "hour",
    "minute", "second", "morning", "afternoon", "evening", "night", "weekend", "decade",
    "century", "spring", "summer", "autumn", "fall", "winter", "daily", "weekly", "monthly",
    "yearly", "annual", "annually", "ago", "bc", "ad", "january", "february", "march", "april",
    "may", "june", "july", "august", "september", "october", "november", "december", "monday",
    "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
];
/// Words beside which "may" is the verb ("How may I…", "it may rain").
#[rustfmt::skip]
const MODAL_NEIGHBOURS: &[&str] = &[
    "i", "we", "you", "he", "she", "it", "they", "one", "this", "that", "there", "be", "have",
    "not", "also", "well",
];
/// Words that make a following time word a greeting ([`times`]).
const PLEASANT: &[&str] = &["good", "great", "nice", "lovely", "wonderful", "happy"];
/// Abbreviated time units, read as the word.
#[rustfmt::skip]
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("yr", "year"), ("yrs", "year"), ("hr", "hour"), ("hrs", "hour"), ("mins", "minute"),
    ("sec", "second"), ("secs", "second"), ("wk", "week"), ("wks", "week"),
];
/// Prefixes that turn a word into its opposite.
const PREFIXES: &[&str] = &["dis", "un", "non", "de", "in", "im", "anti", "en"];

#[derive(Debug, Clone)]
struct Token {
    surface: String,
    low: String,
    stem: String,
    /// The English Snowball stem of a word in ASCII letters ("tracking",
    /// "tracked" → "track"; "difference" → "differ"), else `stem`: two
    /// words with one root are one word inflected ([`Verifier::check_at`]'s
    /// pairing).
    root: String,
    /// Punctuation (a comma, a full stop…) since the previous token.
    boundary: bool,
    /// First token of a sentence.
    start: bool,
    /// Which clause of the prompt the token is in (clauses end at any
    /// punctuation), from 0.
    clause: usize,
    /// Which sentence (sentences end at `.`, `?`, `!`, `:`, `;`), from 0.
    sentence: usize,
    /// Joined to the content word before it by "and" or "or" ("Tokyo and
    /// Seoul"); set by [`content`].
    coordinated: bool,
    cjk: bool,
    /// Written in capitals in a prompt that is not ([`key_stem`]).
    capitals: bool,
    /// In a prompt in German, which capitalises every noun ([`is_name`]).
    german: bool,
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30ff | 0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xac00..=0xd7af)
}

fn is_word_char(c: char) -> bool {
    (c.is_alphanumeric() || c == '_') && !is_cjk(c)
}

/// Splits on words (letters, digits, `_`, inner `.+#'-`, and `/` between
/// letters), single CJK
/// characters and punctuation (which only marks boundaries).
fn tokenize(text: &str) -> Vec<Token> {
    let text = text.replace('’', "'");
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut boundary, mut start) = (true, true);
    let (mut i, mut clause, mut sentence) = (0, 0, 0);
    while i < chars.len() {
        let c = chars[i];
        if is_cjk(c) {
            clause += usize::from(boundary && !tokens.is_empty());
            sentence += usize::from(start && !tokens.is_empty());
            let place = (boundary, clause, sentence);
            tokens.push(token(c.to_string(), start, place, true));
            (boundary, start) = (false, false);
            i += 1;
        } else if c.is_alphanumeric() {
            let mut j = i + 1;
            // A slash between two letters joins one word: "true/false",
            // "w/o" (not "w/ friends", not "1/2").
            let slash = |j: usize| {
                chars[j] == '/'
                    && chars[j - 1].is_alphabetic()
                    && chars.get(j + 1).is_some_and(|c| c.is_alphabetic())
            };
            while j < chars.len()
                && (is_word_char(chars[j])
                    || matches!(chars[j], '.' | '+' | '#' | '\'' | '-')
                    || slash(j))
            {
                j += 1;
            }
            // A word ends in a letter, digit, `_`, `+` or `#`.
            let mut end = j;
            while end > i + 1
                && !(is_word_char(chars[end - 1]) || matches!(chars[end - 1], '+' | '#'))
            {
                end -= 1;
            }
            // A percentage keeps its sign: 20% is not 20.
            if chars.get(end) == Some(&'%') && chars[end - 1].is_ascii_digit() {
                end += 1;
            }
            clause += usize::from(boundary && !tokens.is_empty());
            sentence += usize::from(start && !tokens.is_empty());
            let place = (boundary, clause, sentence);
            tokens.push(token(chars[i..end].iter().collect(), start, place, false));
            (boundary, start) = (false, false);
            // What was trimmed (a full stop…) is read again as punctuation.
            i = end;
        } else {
            // A hyphen between spaces is a dash.
            let dash = c == '-'
                && i > 0
                && chars[i - 1].is_whitespace()
                && chars.get(i + 1).is_some_and(|n| n.is_whitespace());
            if matches!(c, ',' | '(' | ')' | '，' | '、') {
                boundary = true;
            } else if dash
                || matches!(
                    c,
                    '.' | '!'
                        | '?'
                        | ':'
                        | ';'
                        | '¿'
                        | '¡'
                        | '—'
                        | '–'
                        | '。'
                        | '？'
                        | '！'
                        | '：'
                        | '；'
                )
            {
                (boundary, start) = (true, true);
            }
            i += 1;
        }
    }
    // "15 percent" (or "per cent") is "15%".
    let mut k = 0;
    while k + 1 < tokens.len() {
        let next = |n: usize| {
            tokens
                .get(k + n)
                .filter(|t| !t.boundary)
                .map(|t| t.low.as_str())
        };
        let words = match (next(1), next(2)) {
            (Some("percent" | "pct"), _) => 1,
            (Some("per"), Some("cent")) => 2,
            _ => 0,
        };
        let low = tokens[k].low.as_str();
        // Digits only: "fifteen%" would be no word at all.
        let number = is_number(low) && !low.ends_with('%');
        if words > 0 && number {
            let t = &mut tokens[k];
            for form in [&mut t.surface, &mut t.low, &mut t.stem, &mut t.root] {
                form.push('%');
            }
            tokens.drain(k + 1..=k + words);
        }
        k += 1;
    }
    // German capitalises every noun: a capital there names nothing.
    let function = tokens
        .iter()
        .filter(|t| GERMAN.contains(&t.low.as_str()) || GERMAN_GREETINGS.contains(&t.low.as_str()))
        .count();
    if function >= 2 && function * 5 >= tokens.iter().filter(|t| !t.cjk).count() {
        for t in &mut tokens {
            t.german = true;
        }
    }
    // A prompt in capitals throughout is shouted: its words are words.
    if text.chars().any(char::is_lowercase) {
        for t in &mut tokens {
            t.capitals = t.surface.chars().filter(|c| c.is_uppercase()).count() > 1
                && !t.surface.chars().any(char::is_lowercase);
        }
    }
    tokens
}

fn token(surface: String, start: bool, place: (bool, usize, usize), cjk: bool) -> Token {
    let (boundary, clause, sentence) = place;
    let low = surface.to_lowercase();
    let stem = ABBREVIATIONS
        .iter()
        .find(|(short, _)| *short == low)
        .map_or_else(|| stem(&low), |(_, word)| (*word).to_owned());
    Token {
        // Every listed negation is one word to pair: the negation check has
        // compared them already. (A misspelt one still pairs as a typo, and
        // `is_negation`'s edit distances are not paid twice.)
        root: if NEGATIONS.contains(&low.as_str()) || low.ends_with("n't") {
            "not".to_owned()
        } else {
            root(&stem)
        },
        stem,
        low,
        surface,
        boundary,
        start,
        clause,
        sentence,
        coordinated: false,
        cjk,
        capitals: false,
        german: false,
    }
}

/// Whether `t` names a thing: an English noun whose most frequent sense
/// (WordNet's) is an animal, a plant, a food, a substance, an object, a
/// body part, a place or a person (`verify/things.txt`,
/// `scripts/make-things.sh`). Swapping one is never rewording.
fn is_thing(t: &Token) -> bool {
    static THINGS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
        std::sync::LazyLock::new(|| include_str!("verify/things.txt").lines().collect());
    !t.cjk && THINGS.contains(t.stem.as_str())
}

/// Whether `short`, no English word itself, is the start of the English
/// word `long` cut short: "diff" of "difference", "dir" of "directory",
/// "int" of "integer".
fn abbreviates(short: &str, long: &str) -> bool {
    let n = short.chars().count();
    n >= 3
        && long.chars().count() > n + 1
        && long.starts_with(short)
        && short.chars().all(|c| c.is_ascii_lowercase())
        && !is_word(short)
        && is_word(long)
}

/// The English Snowball stem of `stem` (see [`Token::root`]).
fn root(stem: &str) -> String {
    static ENGLISH: std::sync::LazyLock<qdrant_rust_stemmers::Stemmer> =
        std::sync::LazyLock::new(|| {
            qdrant_rust_stemmers::Stemmer::create(qdrant_rust_stemmers::Algorithm::English)
        });
    if stem.len() > 3 && stem.bytes().all(|b| b.is_ascii_lowercase()) {
        ENGLISH.stem(stem).into_owned()
    } else {
        stem.to_owned()
    }
}

/// A light stemmer: plurals only (`ies` → `y`, a final `s`).
fn stem(word: &str) -> String {
    // A possessive is the word: "a tenant's obligations" names the tenant.
    let word = word.strip_suffix("'s").unwrap_or(word);
    let w = word.trim_matches(|c| matches!(c, '\'' | '-' | '.'));
    let n = w.chars().count();
    if n > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    if n > 3 && w.ends_with('s') && !w.ends_with("ss") {
        return w[..w.len() - 1].to_owned();
    }
    w.to_owned()
}

/// The longest word compared letter by letter (longer ones match only
/// when equal): no word is longer, and the table below grows with the
/// square of the length.
const MAX_FUZZY_CHARS: usize = 40;

/// Optimal-string-alignment distance (a transposition counts once), or
/// more than 2 when the lengths alone differ by more, or either is longer
/// than [`MAX_FUZZY_CHARS`]. On the stack: it runs for every long word
/// against every long negation ([`is_negation`]).
fn edit_distance(a: &str, b: &str) -> usize {
    let chars = |w: &str| -> Option<([char; MAX_FUZZY_CHARS], usize)> {
        let mut out = ['\0'; MAX_FUZZY_CHARS];
        let mut n = 0;
        for c in w.chars() {
            *out.get_mut(n)? = c;
            n += 1;
        }
        Some((out, n))
    };
    let (Some((ca, n)), Some((cb, m))) = (chars(a), chars(b)) else {
        return 3;
    };
    if n.abs_diff(m) > 2 {
        return 3;
    }
    let (a, b) = (&ca[..n], &cb[..m]);
    // Rows i, i - 1 and i - 2 of the table, kept at i % 3.
    let mut rows = [[0usize; MAX_FUZZY_CHARS + 1]; 3];
    for (j, cell) in rows[0].iter_mut().enumerate().take(m + 1) {
        *cell = j;
    }
    for i in 1..=n {
        let (cur, prev, prev2) = (i % 3, (i - 1) % 3, (i + 1) % 3);
        rows[cur][0] = i;
        for j in 1..=m {
            let mut best = (rows[prev][j] + 1)
                .min(rows[cur][j - 1] + 1)
                .min(rows[prev][j - 1] + usize::from(a[i - 1] != b[j - 1]));
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[prev2][j - 2] + 1);
            }
            rows[cur][j] = best;
        }
    }
    rows[n % 3][m]
}

/// English words and names in lower case, one per line: SCOWL's common
/// words and names (sizes up to 50, the size of Debian's `wamerican`),
/// made by `scripts/make-words.sh`; licence in `verify/WORDS-LICENSE`.
static WORDS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| include_str!("verify/words.txt").lines().collect());

/// Reads the word list (otherwise read on first use).
pub fn load_words() {
    std::sync::LazyLock::force(&WORDS);
}

/// Whether `w` is an English word or name as spelled.
fn is_word(w: &str) -> bool {
    WORDS.contains(w)
}

/// Whether at least half of a prompt's words (Chinese, Japanese and Korean
/// characters count as unknown ones) are English words as spelled: the
/// word list speaks only for English text.
fn english(tokens: &[Token]) -> bool {
    let (mut words, mut known) = (0, 0);
    for t in tokens
        .iter()
        .filter(|t| t.low.chars().all(char::is_alphabetic))
    {
        words += 1;
        known += usize::from(!t.cjk && (is_word(&t.low) || is_word(&t.stem)));
    }
    words > 0 && known * 2 >= words
}

/// The same word, allowing a typo in words of four letters or more (one edit;
/// two in long ordinary words). Never across digits. In `english` text,
/// two words as spelled are two words ("moose" is not a misspelt "mouse",
/// nor "bake" "make"), and two short unknown ones are names or acronyms
/// whose every letter counts (gzip and bzip). `x` and `y` may be stems
/// ([`stem`]: "campu" is campus).
fn same_word(x: &str, y: &str, key: bool, english: bool) -> bool {
    let plain = |w: &str| unaccented(w).unwrap_or_else(|| w.to_owned());
    if x == y || (!(x.is_ascii() && y.is_ascii()) && plain(x) == plain(y)) {
        return true;
    }
    let (nx, ny) = (x.chars().count(), y.chars().count());
    if nx < 4 || ny < 4 || x.chars().chain(y.chars()).any(|c| c.is_ascii_digit()) {
        return false;
    }
    if english {
        let known = |w: &str| is_word(w) || is_word(&format!("{w}s"));
        match (known(x), known(y)) {
            (true, true) => return false,
            (false, false) if nx.min(ny) < 6 => return false,
            _ => {}
        }
    }
    let allowed = if key || nx.min(ny) < 7 { 1 } else { 2 };
    edit_distance(x, y) <= allowed
}

fn is_number(low: &str) -> bool {
    let s = low.strip_suffix('%').unwrap_or(low);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    int.starts_with(|c: char| c.is_ascii_digit())
        && int.chars().all(|c| c.is_ascii_digit() || c == ',')
        && frac.chars().all(|c| c.is_ascii_digit())
        && (frac.is_empty() != s.contains('.'))
}

/// The numbers `tokens` name. A hyphenated word that `other` writes as
/// separate words counts as those words: "two-factor" against "two
/// factor" names two on both sides ("a four-year-old" alone names none).
fn numbers(tokens: &[Token], other: &[Token]) -> std::collections::BTreeSet<String> {
    tokens
        .iter()
        .flat_map(|t| {
            let parts: Vec<&str> = t.low.split('-').collect();
            let split = parts.len() > 1
                && other
                    .windows(parts.len())
                    .any(|w| w.iter().zip(&parts).all(|(u, p)| u.low == *p));
            let own = std::iter::once(t.low.as_str()).filter(move |_| !split);
            own.chain(parts.into_iter().filter(move |_| split))
        })
        .filter_map(|low| {
            let (body, sign) = low.strip_suffix('%').map_or((low, ""), |b| (b, "%"));
            if is_number(body) {
                Some(format!("{}{sign}", body.replace(',', "")))
            } else {
                NUMBER_WORDS
                    .iter()
                    .find(|(w, _)| *w == body)
                    .map(|(_, n)| format!("{n}{sign}"))
            }
        })
        .collect()
}

/// `w` without its accents (Perú: peru, Zürich: zurich); `None` when it
/// has none.
fn unaccented(w: &str) -> Option<String> {
    use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};
    if w.is_ascii() {
        return None;
    }
    let plain: String = w.nfd().filter(|&c| !is_combining_mark(c)).collect();
    (plain != w).then_some(plain)
}

fn capitalised(t: &Token) -> bool {
    t.surface.chars().next().is_some_and(char::is_uppercase)
}

/// A key term's stem: the word itself for one written in capitals (in a
/// prompt that is not), whose final S is one of its letters: HTTPS is not
/// the plural of HTTP (that is written "HTTPs").
fn key_stem(t: &Token) -> &str {
    if t.capitals { &t.low } else { &t.stem }
}

/// Whether key term `t` (`plain`: without its accents, if it has any) is
/// the other prompt's word form `y` (capitalised there or not; the forms
/// include each word without its accents). A typo is allowed in names of
/// five letters or more, and only where one side is in lower case: a
/// writer who capitalises both names spelled them, and short names one
/// letter apart are different names (Iran and Iraq, Fuji and Fiji).
fn same_key(t: &Token, plain: Option<&str>, y: &str, y_capitalised: bool, english: bool) -> bool {
    let stem = key_stem(t);
    if t.low == y || stem == y || plain == Some(y) {
        return true;
    }
    let long = |w: &str| w.chars().count() >= 5;
    !(capitalised(t) && y_capitalised)
        && long(&t.low)
        && long(y)
        && (same_word(stem, y, true, english) || same_word(&t.low, y, true, english))
}

fn is_key(t: &Token) -> bool {
    is_name(t, true)
}

/// [`is_key`], where `capital` says whether a capital first letter alone
/// makes a name: not in German, where every noun has one ("Hallo! Kurze
/// Frage: …" names nothing), so German names rest on the checks that
/// lower-case English ones do (a swapped word is a substitution, an added
/// one a qualifier).
fn is_name(t: &Token, capital: bool) -> bool {
    let s = &t.surface;
    let function = FUNCTION_CAPS.contains(&t.low.as_str()) || GREETINGS.contains(&t.low.as_str());
    s.chars().any(|c| c.is_ascii_digit())
        || s.contains('_')
        // A one-letter language is a name only as a capital: "how r they
        // different", "the c to f formula" name no R and no C.
        || (LANGUAGES.contains(&t.low.as_str())
            && (t.low.chars().count() > 1 || s.chars().all(char::is_uppercase)))
        || (capital && !function && !t.start && s.chars().next().is_some_and(char::is_uppercase))
        || (!function && s.chars().skip(1).any(char::is_uppercase))
}

/// The German ones of [`GREETINGS`], which show a prompt's language too.
const GERMAN_GREETINGS: &[&str] = &["hallo", "danke", "dank", "vielen", "bitte"];

/// German function words: a prompt with enough of them is in German
/// ([`tokenize`]), where they ask for nothing more ([`incidental`]).
#[rustfmt::skip]
const GERMAN: &[&str] = &[
    "der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "eines",
    "ist", "sind", "wie", "was", "wo", "wann", "warum", "welche", "welcher", "welches", "ich",
    "du", "sie", "wir", "es", "und", "oder", "mit", "von", "zu", "auf", "für", "im", "am",
    "man", "hat", "habe", "kann", "können", "könnten", "mir", "mich", "auch", "noch",
    "nach", "bei", "aus", "über", "gibt", "mein", "meine", "sich", "wird", "werden", "dieses",
    "diese", "dieser", "dir", "dich", "euch", "uns",
];

/// The negations that bear on what is asked: not the asker's own "I don't
/// get what…", "I'm not sure how…" (a negated verb of knowing between "I"
/// and a question word or the end of its phrase), which frames the
/// question without changing it, nor one in a polite hedge, a clause of
/// [`HEDGES`] and function words alone ("if you don't mind", "hope I'm
/// not interrupting", "if it's not too much trouble").
fn negations(tokens: &[Token]) -> usize {
    let low = |k: usize| tokens.get(k).map(|t| t.low.as_str());
    let framing = |k: usize| {
        let asker = k >= 1
            && (matches!(low(k - 1), Some("i" | "i'm" | "im"))
                || (k >= 2 && low(k - 1) == Some("do") && low(k - 2) == Some("i")));
        let knowing = tokens
            .get(k + 1)
            .is_some_and(|v| KNOWING.contains(&v.stem.as_str()) && !v.boundary);
        let then_asks = tokens
            .get(k + 2)
            .is_none_or(|w| w.boundary || QUESTION_WORDS.contains(&w.low.as_str()));
        asker && knowing && then_asks
    };
    let hedge = |k: usize| {
        let mut words = tokens
            .iter()
            .filter(|u| u.clause == tokens[k].clause && !is_negation(&u.low))
            .filter(|u| !STOP.contains(&u.stem.as_str()) && !STOP.contains(&u.low.as_str()))
            .peekable();
        words.peek().is_some()
            && words.all(|u| HEDGES.contains(&u.low.as_str()) || HEDGES.contains(&u.stem.as_str()))
    };
    tokens
        .iter()
        .enumerate()
        .filter(|&(k, t)| is_negation(&t.low) && !framing(k) && !hedge(k))
        .count()
}

/// The words of a polite hedge ([`negations`]).
#[rustfmt::skip]
const HEDGES: &[&str] = &[
    "mind", "trouble", "much", "hope", "interrupting", "interrupt", "bother", "bothering",
    "dumb", "silly", "stupid", "question", "asking", "ask",
];

/// Verbs of knowing, negated by the asker to frame a question ([`negations`]).
const KNOWING: &[&str] = &["know", "get", "understand", "remember", "sure"];

/// Words that open an indirect question.
#[rustfmt::skip]
const QUESTION_WORDS: &[&str] = &[
    "what", "how", "why", "which", "who", "where", "when", "whether", "if",
];

/// A negation, written with or without its apostrophe, or a long one
/// misspelt ("wihtout", "cannnot").
fn is_negation(low: &str) -> bool {
    NEGATIONS.contains(&low)
        || low.ends_with("n't")
        || (low.chars().count() >= 6
            && NEGATIONS
                .iter()
                .any(|n| n.chars().count() >= 6 && edit_distance(n, low) == 1))
}

fn in_lexicon(tokens: &[Token], lexicon: &[&str]) -> std::collections::BTreeSet<String> {
    tokens
        .iter()
        .filter(|t| lexicon.contains(&t.stem.as_str()) || lexicon.contains(&t.low.as_str()))
        // One name of the two an alias gives: "mac" is "macOS".
        .map(|t| match alias(&t.low) {
            Some(other) if other < t.stem.as_str() => other.to_owned(),
            _ => t.stem.clone(),
        })
        .collect()
}

/// The time words in `tokens`, leaving out greetings and the modal "may":
/// a time word after a pleasant word and ending its phrase ("Good
/// evening.", "have a great day!") or standing alone ("Morning!") names no
/// time ("a good night routine" and "in the morning" do).
fn times(tokens: &[Token]) -> std::collections::BTreeSet<String> {
    tokens
        .iter()
        .enumerate()
        .filter(|&(i, t)| {
            let phrase_ends = tokens.get(i + 1).is_none_or(|next| next.boundary);
            let greeting = phrase_ends
                && ((i > 0 && PLEASANT.contains(&tokens[i - 1].low.as_str()) && !t.boundary)
                    || t.start);
            // "Hope your day is going well": the reader's day, no date.
            let yours = i > 0 && tokens[i - 1].low == "your" && !t.boundary;
            let modal = t.low == "may"
                && [i.checked_sub(1), Some(i + 1)]
                    .into_iter()
                    .flatten()
                    .filter_map(|j| tokens.get(j))
                    .any(|n| MODAL_NEIGHBOURS.contains(&n.low.as_str()));
            !greeting
                && !yours
                && !modal
                && (TIME.contains(&t.stem.as_str()) || TIME.contains(&t.low.as_str()))
        })
        .map(|(_, t)| t.stem.clone())
        .collect()
}

/// Content words (stop words dropped), each marked with whether punctuation
/// came since the previous content word, and whether it is coordinated
/// with it: the two words on either side of "and" or "or", articles
/// aside ("Tokyo and Seoul", "a list or a tuple").
fn content(tokens: &[Token]) -> Vec<Token> {
    let is_stop =
        |t: &Token| !t.cjk && (STOP.contains(&t.stem.as_str()) || STOP.contains(&t.low.as_str()));
    let mut out: Vec<Token> = Vec::new();
    let mut boundary = true;
    for (i, t) in tokens.iter().enumerate() {
        boundary |= t.boundary;
        if !is_stop(t) {
            let mut before = tokens[..i]
                .iter()
                .rev()
                .skip_while(|u| ARTICLES.contains(&u.low.as_str()) && !u.boundary);
            let coordinated = !t.boundary
                && before
                    .next()
                    .is_some_and(|c| COORDINATORS.contains(&c.low.as_str()) && !c.boundary)
                && before.next().is_some_and(|x| !is_stop(x));
            out.push(Token {
                boundary,
                coordinated,
                ..t.clone()
            });
            boundary = false;
        }
    }
    out
}

/// The content words' stems in the order the order check compares: two
/// coordinated words in alphabetical order.
fn order_keys(cs: &[Token]) -> Vec<&str> {
    let mut k: Vec<&str> = cs.iter().map(|t| t.stem.as_str()).collect();
    for i in 1..k.len() {
        if cs[i].coordinated && k[i] < k[i - 1] {
            k.swap(i, i - 1);
        }
    }
    k
}

/// Whether `b` is `a` with whole phrases moved: the same words, in runs
/// (the longest first, from the start of `a`) that each begin a prompt,
/// follow punctuation or open with a preposition or conjunction of
/// [`OPENERS`], on both sides, no two with the same opener. "What is the
/// monthly payment on a $250,000 mortgage at 6% over 30 years?" is "Over
/// 30 years at 6%, what is the monthly payment on a $250,000 mortgage?";
/// "…from London to New York?" is not "…from New York to London?" (the
/// prepositions stay where they were and the names swap), nor "What time is
/// it in London, when it's 9 AM in Tokyo?" "…in Tokyo, when it's 9 AM in
/// London?" (two phrases with one opener trade places).
fn moved_phrases(a: &[Token], b: &[Token]) -> bool {
    let wa: Vec<&str> = a.iter().map(|t| t.low.as_str()).collect();
    let wb: Vec<&str> = b.iter().map(|t| t.low.as_str()).collect();
    if !reordered(&wa, &wb) || wa.len() > MAX_MOVED_WORDS {
        return false;
    }
    let opens =
        |ts: &[Token], i: usize| i == 0 || ts[i].boundary || OPENERS.contains(&ts[i].low.as_str());
    let mut used = vec![false; wb.len()];
    let mut openers = std::collections::BTreeSet::new();
    let mut i = 0;
    while i < wa.len() {
        // The longest run from `a[i]` that is unused and in a row in `b`.
        let (len, at) = (0..wb.len())
            .map(|j| {
                let n = (0..)
                    .take_while(|&k| {
                        i + k < wa.len()
                            && j + k < wb.len()
                            && !used[j + k]
                            && wa[i + k] == wb[j + k]
                    })
                    .count();
                (n, j)
            })
            .max_by_key(|&(n, j)| (n, std::cmp::Reverse(j)))
            .unwrap_or((0, 0));
        if len == 0 || !opens(a, i) || !opens(b, at) {
            return false;
        }
        if OPENERS.contains(&wa[i]) && !openers.insert(wa[i]) {
            return false;
        }
        used[at..at + len].iter_mut().for_each(|u| *u = true);
        i += len;
    }
    true
}

/// Whether `y` holds the items of `x` in another order.
fn reordered<T: Ord + Clone>(x: &[T], y: &[T]) -> bool {
    x != y && {
        let (mut x, mut y) = (x.to_vec(), y.to_vec());
        x.sort_unstable();
        y.sort_unstable();
        x == y
    }
}

/// The prepositions of direction in `tokens`, in order.
fn directions(tokens: &[Token]) -> Vec<&str> {
    tokens
        .iter()
        .map(|t| t.low.as_str())
        .filter(|w| DIRECTIONS.contains(w))
        .collect()
}

/// Prepositions of direction, which as stop words would otherwise be hidden
/// from the order check.
const DIRECTIONS: &[&str] = &["from", "to", "into", "onto", "than", "towards", "toward"];

/// The longest prompt, in words, whose phrases may move
/// ([`moved_phrases`], whose search grows with the cube of the length in
/// the worst case); a longer one keeps its order.
const MAX_MOVED_WORDS: usize = 80;

/// Prepositions and subordinating conjunctions that open a phrase which
/// may move whole ([`moved_phrases`]).
#[rustfmt::skip]
const OPENERS: &[&str] = &[
    "if", "when", "whenever", "while", "once", "after", "before", "until", "unless", "as",
    "because", "since", "though", "although", "in", "on", "at", "under", "over", "for",
    "from", "to", "with", "without", "by", "during", "between", "into", "through", "via",
    "using", "per", "within", "across", "besides", "except",
];

/// Words that join two words or clauses of equal standing.
#[rustfmt::skip]
const COORDINATORS: &[&str] = &[
    "and", "or", "und", "oder", "et", "ou", "y", "o", "e",
];

/// Articles, skipped when looking for what "and" or "or" joins.
const ARTICLES: &[&str] = &["a", "an", "the"];

/// Each pair of [`OPPOSITES`] as the stems of its words' forms, built once.
static OPPOSITE_FORMS: std::sync::LazyLock<Vec<(Vec<String>, Vec<String>)>> =
    std::sync::LazyLock::new(|| {
        OPPOSITES
            .iter()
            .map(|(p, q)| (inflections(&stem(p)), inflections(&stem(q))))
            .collect()
    });

/// A verb or adjective and its regular inflections: include, included,
/// including; stop, stopped; hot, hotter.
fn inflections(w: &str) -> Vec<String> {
    let mut out = vec![w.to_owned()];
    let root = w.strip_suffix('e').unwrap_or(w);
    for end in ["ed", "ing", "er", "est"] {
        out.push(format!("{root}{end}"));
    }
    if let Some(last) = w.chars().last().filter(|c| !"aeiouwy".contains(*c)) {
        for end in ["ed", "ing", "er", "est"] {
            out.push(format!("{w}{last}{end}"));
        }
    }
    if let Some(root) = w.strip_suffix('y') {
        out.push(format!("{root}ied"));
    }
    out
}

/// `x` and `y` are the same word but for an opposite-making prefix
/// (advantage/disadvantage, enable/disable).
fn prefixed_opposites(x: &str, y: &str) -> bool {
    let root = |w: &str| -> Option<String> {
        PREFIXES
            .iter()
            .find_map(|p| w.strip_prefix(p).filter(|r| r.chars().count() >= 3))
            .map(str::to_owned)
    };
    [(x, y), (y, x)].iter().any(|(a, b)| {
        root(a).is_some_and(|r| *b == r || root(b).is_some_and(|rb| rb == r && a != b))
    })
}

impl Verifier {
    /// `Ok(())` when `cached` and `incoming` may share an answer, otherwise
    /// the first difference found.
    pub fn check(&self, cached: &str, incoming: &str) -> Result<(), Reason> {
        self.words(cached, incoming).map(|_| ())
    }

    /// [`Self::check`] for two prompts at cosine `similarity`, which also
    /// refuses a rewording below [`REWORDED_MIN`]: when each prompt has
    /// more content words of its own than the two share, the words give no
    /// evidence that they ask the same thing, so the similarity must.
    ///
    /// With `backstory`, a pair the whole prompts fail is checked again
    /// when one of them is context followed by a question and the other is
    /// a single sentence: the question against the other prompt. Backstory
    /// ("I'm planning a trip next year and realised I don't know. What's the
    /// capital of New Zealand?") brings numbers, names and negations the
    /// short form lacks without changing what is asked; context that names
    /// a number or a language the question does not is not set aside
    /// ("I'm on Python 2. How do I print a line?"). Instructions after the
    /// question ("…? Answer only yes or no.") are never set aside either.
    pub fn check_at(&self, cached: &str, incoming: &str, similarity: f32) -> Result<(), Reason> {
        let whole = self.reworded_at(cached, incoming, similarity);
        let Err(reason) = whole else {
            return whole;
        };
        match backstory(cached, incoming).filter(|_| self.backstory) {
            // The question alone is short, so its words must carry the
            // match: at least one shared, and no more of its own on either
            // side than shared.
            Some((a, b)) => match self.words(a, b) {
                Ok(w) if w.shared >= 1 && w.only_a.max(w.only_b) <= w.shared => Ok(()),
                _ => Err(reason),
            },
            None => Err(reason),
        }
    }

    /// The similarity `cached` and `incoming` need to hit: `threshold`, or
    /// [`TYPO_MARGIN`] less when one is the other typed in a hurry (the
    /// same words but for typos, in the same order) and `typo_variants` is
    /// on. The word checks ([`Self::check_at`]) apply all the same.
    pub fn threshold_for(&self, cached: &str, incoming: &str, threshold: f32) -> f32 {
        if self.typo_variants && typo_variant(cached, incoming) {
            threshold - TYPO_MARGIN
        } else {
            threshold
        }
    }

    fn reworded_at(&self, cached: &str, incoming: &str, similarity: f32) -> Result<(), Reason> {
        let words = self.words(cached, incoming)?;
        if similarity < REWORDED_MIN && words.only_a.min(words.only_b) > words.shared {
            return Err(Reason::Reworded);
        }
        Ok(())
    }

    /// The word checks; on success, how the content words differ.
    fn words(&self, cached: &str, incoming: &str) -> Result<Overlap, Reason> {
        let (a, b) = (tokenize(cached), tokenize(incoming));
        if numbers(&a, &b) != numbers(&b, &a) {
            return Err(Reason::Number);
        }
        // Each word's forms (accents aside too), and whether its writer
        // capitalised it.
        let words = |ts: &[Token]| -> Vec<(String, bool)> {
            ts.iter()
                .flat_map(|t| {
                    let caps = capitalised(t);
                    [(t.low.clone(), caps), (key_stem(t).to_owned(), caps)]
                        .into_iter()
                        .chain(alias(&t.low).map(|a| (a.to_owned(), caps)))
                        .chain(unaccented(&t.low).map(|u| (u, caps)))
                })
                .collect()
        };
        let (wa, wb) = (words(&a), words(&b));
        let english_text = english(&a) && english(&b);
        for (xs, other) in [(&a, &wb), (&b, &wa)] {
            for t in xs.iter().filter(|t| is_name(t, !t.german)) {
                let plain = unaccented(&t.low);
                if !other
                    .iter()
                    .any(|(y, caps)| same_key(t, plain.as_deref(), y, *caps, english_text))
                {
                    return Err(Reason::KeyTerm);
                }
            }
        }
        if negations(&a) != negations(&b) {
            return Err(Reason::Negation);
        }
        let stems = |ts: &[Token]| -> std::collections::BTreeSet<String> {
            ts.iter().map(|t| t.stem.clone()).collect()
        };
        let (sa, sb) = (stems(&a), stems(&b));
        let has = |set: &std::collections::BTreeSet<String>, forms: &[String]| {
            forms.iter().any(|f| set.contains(f))
        };
        for (p, q) in OPPOSITE_FORMS.iter() {
            if (has(&sa, p) && has(&sb, q) && !has(&sa, q))
                || (has(&sa, q) && has(&sb, p) && !has(&sa, p))
            {
                return Err(Reason::Opposite);
            }
        }
        for x in sa.difference(&sb) {
            if sb.difference(&sa).any(|y| prefixed_opposites(x, y)) {
                return Err(Reason::Opposite);
            }
        }
        for (lexicon, reason) in [
            (FORMAT, Reason::Format),
            (SCOPE, Reason::Scope),
            (CONDITIONS, Reason::Condition),
        ] {
            if in_lexicon(&a, lexicon) != in_lexicon(&b, lexicon) {
                return Err(reason);
            }
        }
        if times(&a) != times(&b) {
            return Err(Reason::Time);
        }
        let (ca, cb) = (content(&a), content(&b));
        // Two words joined by "and" or "or" are compared in one order
        // ("&str and String" is "String and &str").
        let (ka, kb) = (order_keys(&ca), order_keys(&cb));
        // The same words in the same order, but with the words that give a
        // direction swapped: "…from French into English" is not "…into
        // French from English".
        if ka == kb && reordered(&directions(&a), &directions(&b)) {
            return Err(Reason::Order);
        }
        if reordered(&ka, &kb) {
            // The same words in another order: fine only if a whole clause
            // moved at a boundary, or whole phrases moved, each with the
            // word that opens it.
            let moved_clause = (1..ka.len()).any(|k| {
                ka[k..].iter().chain(&ka[..k]).eq(kb.iter())
                    && (ca[k].boundary || cb[ka.len() - k].boundary)
            });
            if !moved_clause && !moved_phrases(&a, &b) {
                return Err(Reason::Order);
            }
        }
        // Each word on one side pairs with one on the other, the same stem
        // first, then a misspelling or an alias: "…POST request with
        // requests?" against "…POST request with httpx?" leaves "requests"
        // unpaired.
        // One word written as two ("sourdough" against "sour dough", "login"
        // against "log in"): the words on both sides that make it.
        let glued: std::collections::HashSet<String> =
            compounds(&a, &b).chain(compounds(&b, &a)).collect();
        let paired = |xs: &[Token], ys: &[Token]| -> Vec<bool> {
            let mut used = vec![false; ys.len()];
            let mut pair = |t: &Token, exact: bool| {
                let found = ys.iter().enumerate().position(|(j, u)| {
                    !used[j]
                        && if exact {
                            t.stem == u.stem || t.root == u.root
                        } else {
                            same_word(&t.stem, &u.stem, false, english_text)
                                || alias(&t.low) == Some(u.low.as_str())
                                || abbreviates(&t.low, &u.low)
                                || abbreviates(&u.low, &t.low)
                        }
                });
                found.inspect(|&j| used[j] = true).is_some()
            };
            let exact: Vec<bool> = xs.iter().map(|t| pair(t, true)).collect();
            // A word said again, just as it was, is no new word: "a Roth
            // IRA and a traditional IRA" against "Roth and traditional
            // IRAs". (The library "requests" after a "request" is another.)
            let again = |t: &Token| {
                xs.iter().filter(|u| u.low == t.low).count() >= 2
                    && ys.iter().any(|u| t.stem == u.stem || t.root == u.root)
            };
            xs.iter()
                .zip(exact)
                .map(|(t, done)| done || pair(t, false) || again(t) || glued.contains(&t.low))
                .collect()
        };
        let (pa, pb) = (paired(&ca, &cb), paired(&cb, &ca));
        let only = |xs: &[Token], mask: &[bool]| -> Vec<Token> {
            xs.iter()
                .zip(mask)
                .filter(|(_, p)| !**p)
                .map(|(t, _)| t.clone())
                .collect()
        };
        let (da, db) = (only(&ca, &pa), only(&cb, &pb));
        let shared = ca.len() - da.len();
        // A word or two swapped for as many ("copper" against "iron") is a
        // substitution; so is any swap that trades a thing ("cancel my
        // subscription" against "cancel my gym membership": [`is_thing`]),
        // however few words the two prompts share (a person too: "Which
        // artist created…" is not "Who painted…"). Otherwise one word
        // reworded as two ("a substitute for" against "use instead of") is
        // a paraphrase, when each side's own words sit in a clause with
        // shared ones: rewording the question, not an instruction of its
        // own (", just the number" against "and show the working").
        let reworded = |own: &[Token], all: &[Token], mask: &[bool]| {
            own.iter().all(|t| {
                all.iter()
                    .zip(mask)
                    .any(|(u, p)| *p && u.clause == t.clause)
            })
        };
        let most = da.len().max(db.len());
        if self.max_substitution > 0
            && !da.is_empty()
            && !db.is_empty()
            && shared >= 1
            && most <= self.max_substitution
            && (da.iter().chain(&db).any(is_thing)
                || (shared >= most
                    && (da.len() == db.len()
                        || !(reworded(&da, &ca, &pa) && reworded(&db, &cb, &pb)))))
        {
            return Err(Reason::Substitution);
        }
        // Words added on one side only, in a clause that holds shared
        // words, narrow what is asked ("What's your return policy for
        // shoes?", "…side effects of ibuprofen on the stomach?"). Added
        // clauses of their own ("Hey friend, …", "Sorry if this is a dumb
        // question, but …") and pleasantries or misspelt function words
        // within one ("lemme know…", "wat is…") do not. An added clause
        // joined by "and" or "or" to an asking one in its sentence extends
        // what is asked ("What do git stash, git rebase and git
        // cherry-pick do?", "…, and how do I undo it?").
        for (extra, all, mask, other, tokens) in
            [(&da, &ca, &pa, &db, &a), (&db, &cb, &pb, &da, &b)]
        {
            if !other.is_empty() {
                continue;
            }
            let asking: Vec<&Token> = all
                .iter()
                .zip(mask.iter())
                .filter(|(_, p)| **p)
                .map(|(t, _)| t)
                .collect();
            let joined = |t: &Token| {
                asking.iter().any(|u| u.sentence == t.sentence)
                    && tokens
                        .iter()
                        .any(|u| u.clause == t.clause && COORDINATORS.contains(&u.low.as_str()))
            };
            // An added clause of its own is set aside only where a name in
            // it would show: in a prompt whose writer uses capitals. In
            // one written all in lower case, "i live in texas, what is the
            // minimum wage" names a place no check can see.
            let unseen = !writes_capitals(tokens) || tokens.iter().any(|u| u.german);
            if extra.iter().any(|t| {
                (asking.iter().any(|u| u.clause == t.clause) || joined(t) || unseen)
                    && !incidental(t)
            }) {
                return Err(Reason::Qualifier);
            }
        }
        if !da.is_empty() && !db.is_empty() && da.iter().chain(&db).any(|t| t.cjk) {
            return Err(Reason::Script);
        }
        Ok(Overlap {
            only_a: da.len(),
            only_b: db.len(),
            shared,
        })
    }
}

/// The words of `x` that are two neighbouring words of `y` written as one,
/// with those two words.
fn compounds<'t>(x: &'t [Token], y: &'t [Token]) -> impl Iterator<Item = String> + 't {
    y.windows(2)
        .filter(|w| !w[1].boundary && !w[0].cjk && !w[1].cjk)
        .flat_map(|w| {
            [
                (format!("{}{}", w[0].low, w[1].low), w),
                (format!("{}-{}", w[0].low, w[1].low), w),
            ]
        })
        .filter(|(one, _)| one.chars().count() >= 5 && x.iter().any(|t| t.low == *one))
        .flat_map(|(one, w)| [one, w[0].low.clone(), w[1].low.clone()])
}

/// Byte offsets just past each sentence end in `text`: a `.`, `!` or `?`
/// followed by a space (so not a decimal point or "e.g." mid-word).
fn sentence_ends(text: &str) -> impl DoubleEndedIterator<Item = usize> + '_ {
    text.char_indices()
        .filter(move |&(i, c)| {
            matches!(c, '.' | '!' | '?')
                && text[i + c.len_utf8()..].starts_with(char::is_whitespace)
        })
        .map(|(i, c)| i + c.len_utf8())
}

/// The question at the end of a prompt that opens with context: its last
/// sentence (or what follows its last colon), when it asks (ends in `?`)
/// and something comes before it.
fn final_question(text: &str) -> Option<&str> {
    let text = text.trim();
    if !text.ends_with(['?', '？']) {
        return None;
    }
    let body = &text[..text.len() - text.chars().last()?.len_utf8()];
    // The question starts after the last sentence end, or after a colon
    // that introduces it ("…so settle it: what is the tallest mountain in
    // Africa?").
    let colon = body.rfind(": ").map(|i| i + 1);
    let cut = sentence_ends(body).next_back().max(colon)?;
    let (context, question) = (text[..cut].trim(), text[cut..].trim());
    let asked = tokenize(question);
    let told = tokenize(context);
    if asked.is_empty() || told.is_empty() {
        return None;
    }
    // A story written all in lower case would hide the names it tells.
    if !writes_capitals(&told) {
        return None;
    }
    // A question that points back into its context ("Is that dangerous?",
    // "How many milliliters is that?") does not stand alone.
    if asked.iter().any(|t| REFERRING.contains(&t.low.as_str())) {
        return None;
    }
    // Context that gives an instruction ("Reply in JSON.", "Don't use any
    // libraries.") is part of the request.
    if told
        .iter()
        .any(|t| t.start && INSTRUCTIONS.contains(&t.low.as_str()))
    {
        return None;
    }
    // Context that names something the question does not can change the
    // answer: a number ("We are a family of four."), a key term (a name, a
    // language, digits glued to a unit: "I'm on a Mac.", "I weigh 80kg."),
    // an output format or a scope word ("I only need a brief answer."), or
    // a condition the advice must respect ("I'm allergic to nuts.", "It's
    // winter here."). The names of days and months are time words, which
    // in a story only tell it ("an interview next Tuesday"), as SEASONS
    // says.
    let named = |ts: &[Token], story: bool| -> std::collections::BTreeSet<String> {
        let mut s = numbers(ts, &[]);
        s.extend(
            ts.iter()
                .filter(|t| is_key(t) && !TIME.contains(&t.low.as_str()))
                .map(|t| t.low.clone()),
        );
        // Format and scope words shape the answer when the asker asks for
        // them; in the story's other sentences they only tell it ("every
        // night my cat…", "I've tried all the settings", "I'm writing an
        // email to my manager").
        let shaping = if story { wishes(ts) } else { ts.to_vec() };
        s.extend(in_lexicon(&shaping, FORMAT));
        s.extend(in_lexicon(&shaping, SCOPE));
        s.extend(in_lexicon(ts, CONDITIONS));
        // "Fall" is autumn ("she loves fall" and "a haiku about autumn").
        s.extend(
            in_lexicon(ts, SEASONS)
                .into_iter()
                .map(|w| if w == "fall" { "autumn".to_owned() } else { w }),
        );
        s
    };
    // A constraint on the means: "without", or a negation just before a
    // verb of using or having ("I can't use any libraries.", "I don't have
    // admin rights."). Other negations are the story's ("I've never baked
    // bread", "I'd rather not receive them").
    let constrained = told.iter().enumerate().any(|(i, t)| {
        t.low == "without"
            || (is_negation(&t.low)
                && told[i + 1..]
                    .iter()
                    .take(2)
                    .any(|v| MEANS.contains(&v.stem.as_str())))
    });
    (!constrained && named(&told, true).is_subset(&named(&asked, false))).then_some(question)
}

/// Whether the writer of `tokens` uses capitals at all, so that a name
/// would show as one ([`is_key`]).
fn writes_capitals(tokens: &[Token]) -> bool {
    tokens
        .iter()
        .any(|t| t.surface.chars().any(char::is_uppercase))
}

/// The tokens of the sentences in `tokens` that state a wish: a word of
/// [`WANTING`] ("I only need the names.", "I'd prefer a table."), "please",
/// or an obligation ("It has to be one sentence.", "gotta fit a slide"),
/// or that are a short fragment telling no one's story, with no pronoun
/// ("Just the names.", "One sentence max."; a longer sentence without one
/// is the story's: "Nobody at the table is good at maths.", or in a
/// language that drops its pronouns, "En casa solo tengo una báscula.").
fn wishes(tokens: &[Token]) -> Vec<Token> {
    let mut wished: std::collections::BTreeSet<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(i, t)| {
            WANTING.contains(&t.low.as_str())
                || (OBLIGED.contains(&t.low.as_str())
                    && tokens.get(i + 1).is_some_and(|n| n.low == "to"))
        })
        .map(|(_, t)| t.sentence)
        .collect();
    let told: std::collections::BTreeSet<usize> = tokens
        .iter()
        .filter(|t| PRONOUNS.contains(&t.low.as_str()) || REFERRING.contains(&t.low.as_str()))
        .map(|t| t.sentence)
        .collect();
    let mut lengths = std::collections::BTreeMap::<usize, usize>::new();
    for t in tokens {
        *lengths.entry(t.sentence).or_default() += 1;
    }
    wished.extend(
        lengths
            .into_iter()
            .filter(|&(k, n)| !told.contains(&k) && n <= FRAGMENT_WORDS)
            .map(|(k, _)| k),
    );
    tokens
        .iter()
        .filter(|t| wished.contains(&t.sentence))
        .cloned()
        .collect()
}

/// Words by which an asker states a wish ([`wishes`]).
#[rustfmt::skip]
const WANTING: &[&str] = &[
    "want", "wants", "wanted", "wanna", "need", "needs", "needed", "prefer", "like", "looking",
    "trying", "hoping", "hope", "require", "required", "requires", "must", "should", "wish",
    "rather", "asked", "asks", "expects", "expected", "please", "gotta", "ideally",
];
/// Personal pronouns other than [`REFERRING`]'s, by which a sentence
/// tells someone's story ([`wishes`]).
#[rustfmt::skip]
const PRONOUNS: &[&str] = &[
    "i", "i'm", "i've", "i'd", "i'll", "im", "ive", "me", "my", "mine", "we", "we're", "we've",
    "we'd", "we'll", "us", "our", "you", "your", "you're", "he's", "she's", "they're", "it'll",
    "ich", "mein", "meine", "wir", "unser", "je", "j'ai", "mon", "ma", "mes", "nous", "yo",
    "mi", "mis", "nosotros", "nuestro", "nuestra",
];
/// The most words in a fragment ([`wishes`]).
const FRAGMENT_WORDS: usize = 5;
/// Verbs of obligation before "to" ([`wishes`]).
const OBLIGED: &[&str] = &["has", "have", "had", "got", "needs", "ought"];

/// Verbs of using or having: negated in a backstory, they constrain how
/// the question may be answered.
#[rustfmt::skip]
const MEANS: &[&str] = &[
    "use", "using", "have", "install", "access", "allowed", "include", "import", "call", "run",
    "own", "afford", "eat", "drink",
];

/// Conditions of the asker that change advice told in plain words: diet
/// and health, age, climate, budget, and platforms written in lower case
/// (capitalised names are key terms already). One prompt naming one the
/// other does not is refused; told in a backstory, they keep it from being
/// set aside, as seasons do.
#[rustfmt::skip]
const CONDITIONS: &[&str] = &[
    "allergic", "allergy", "vegan", "vegetarian", "pescatarian", "pregnant", "pregnancy",
    "breastfeeding", "diabetic", "diabetes", "celiac", "coeliac", "gluten", "lactose", "dairy",
    "nut", "peanut", "kosher", "halal", "keto", "intolerant", "intolerance", "medication",
    "meds", "asthma", "asthmatic", "injury", "injured", "surgery", "disabled", "disability",
    "wheelchair", "blind", "deaf", "toddler", "baby", "infant", "newborn", "elderly", "senior",
    "teenager", "teen", "retired", "tropical", "hemisphere", "climate", "humid", "altitude",
    "budget", "broke", "windows", "mac", "macos", "linux", "ubuntu", "iphone", "ipad",
    "android", "ios", "chromebook",
];

/// A word added to a request that does not narrow it: a pleasantry, or a
/// misspelt function word ("wat", "wich", "teh": one edit from a common
/// one, same first letter).
fn incidental(t: &Token) -> bool {
    (t.german && GERMAN.contains(&t.low.as_str()))
        || PLEASANTRIES.contains(&t.low.as_str())
        || PLEASANTRIES.contains(&t.stem.as_str())
        || GREETINGS.contains(&t.low.as_str())
        || (t.low.chars().count() >= 3
            && MISSPELT
                .iter()
                .any(|w| w.chars().next() == t.low.chars().next() && edit_distance(w, &t.low) == 1))
}

/// Words of politeness, chat and framing that ask for nothing more.
#[rustfmt::skip]
const PLEASANTRIES: &[&str] = &[
    "sorry", "bother", "bothering", "friend", "team", "folks", "guy", "cheers", "greeting",
    "grateful", "many", "lemme", "ngl", "dumb", "silly", "wondering", "wonder", "curious",
    "appreciate", "appreciated", "random", "assistant", "regards", "kind", "advance", "lol",
    "ty", "tysm", "hiya", "interrupting", "hope", "way", "given", "describe", "explain",
    "process", "inform", "exactly", "actually", "basically", "simply", "mind",
    // Chat's interjections.
    "confused", "provide", "clarify", "omg", "tbh", "wtf", "lmao", "lmfao", "tho", "dude", "af", "nah", "imo", "imho", "btw",
    // The same in German, French, Spanish, Italian and Portuguese: a quick
    // question, sorry to bother, many thanks in advance, kind regards.
    "kurze", "frage", "entschuldigen", "entschuldigung", "störung", "stören",
    "voraus", "schön", "grüße", "freundlichen", "excusez-moi", "excusez", "déranger",
    "beaucoup", "avance", "cordialement", "petite", "rapide", "disculpe", "perdón",
    "molestar", "molestia", "pregunta", "rápida", "muchas", "saludos", "scusi", "scusa",
    "disturbo", "disturbare", "domanda", "veloce", "saluti", "mille", "desculpe",
    "incomodar", "pergunta", "obrigado", "obrigada",
];

/// Function words often misspelt ([`incidental`]).
#[rustfmt::skip]
const MISSPELT: &[&str] = &[
    "what", "which", "with", "when", "where", "the", "how", "does", "this", "that", "your",
    "there", "their", "about", "should", "would", "could",
];

/// The time words that set the conditions of advice ("It's winter here.");
/// other time words in a backstory (an interview yesterday, a trip next
/// year) only tell the story.
const SEASONS: &[&str] = &["spring", "summer", "autumn", "fall", "winter"];

/// Words by which a question refers back to what came before it.
#[rustfmt::skip]
const REFERRING: &[&str] = &[
    "it", "its", "it's", "that", "that's", "this", "these", "those", "they", "them", "their",
    "he", "him", "his", "she", "her", "there",
];

/// Words that open an instruction to the model.
#[rustfmt::skip]
const INSTRUCTIONS: &[&str] = &[
    "answer", "reply", "respond", "use", "write", "give", "keep", "format", "explain",
    "include", "avoid", "only", "please", "limit", "list", "return", "output", "show", "don't",
    "dont", "do", "never", "always", "be", "assume", "ignore", "pretend", "act", "translate",
    "summarize", "summarise", "describe", "provide", "make", "note", "remember",
];

/// When exactly one prompt is context followed by a question and the other
/// is a single sentence, that question and the other prompt.
fn backstory<'a>(a: &'a str, b: &'a str) -> Option<(&'a str, &'a str)> {
    let single = |t: &str| {
        sentence_ends(t.trim().trim_end_matches(['?', '.', '!', '？']))
            .next()
            .is_none()
    };
    match (final_question(a), final_question(b)) {
        (Some(q), None) if single(b) => Some((q, b)),
        (None, Some(q)) if single(a) => Some((a, q)),
        _ => None,
    }
}

/// The lowest cosine at which a rewording may hit (see
/// [`Verifier::check_at`]). Picked on the templated questions of
/// `benches/templated_pairs.py` ("How do I handle errors in Rust?" against
/// "How do I check if a file exists in Rust?" is 0.61), not on the
/// development pairs, whose hits it leaves as they are (`docs/cache.md`).
pub const REWORDED_MIN: f32 = 0.65;

/// How far under a group's threshold a typo variant still hits
/// ([`Verifier::threshold_for`]): heavy typos put a copy of a question at
/// cosine 0.38–0.58 with the model (14 such pairs in the eight sets).
pub const TYPO_MARGIN: f32 = 0.25;

/// Words a hurried writer drops or shortens without changing the question.
const TYPO_LIGHT: &[&str] = &["a", "an", "the", "is", "are", "do", "does", "s"];
const TYPO_SHORT: &[(&str, &str)] = &[
    ("u", "you"),
    ("ur", "your"),
    ("whats", "what"),
    ("abt", "about"),
];

/// The same words in the same order but for typos, shortenings ("u",
/// "whats") and dropped articles and auxiliaries: a copy of the question
/// typed in a hurry. At least three words each, and at least one typo.
fn typo_variant(a: &str, b: &str) -> bool {
    let (ta, tb) = (tokenize(a), tokenize(b));
    // Only English text: the word list tells a typo from another word.
    // The copy typed in a hurry may have too many typos to read as English
    // ("explian recurson with an exmaple"); its words must pair with the
    // other's one by one, so the other being English is enough.
    if !english(&ta) && !english(&tb) {
        return false;
    }
    let words = |ts: &[Token]| -> Vec<String> {
        ts.iter()
            .map(|t| {
                TYPO_SHORT
                    .iter()
                    .find(|(s, _)| *s == t.low)
                    .map_or_else(|| t.low.clone(), |(_, l)| (*l).to_owned())
            })
            .filter(|w| !TYPO_LIGHT.contains(&w.as_str()))
            .collect()
    };
    let (wa, wb) = (words(&ta), words(&tb));
    let alias_of = |x: &String, y: &String| alias(x) == Some(y.as_str());
    let same = |x: &String, y: &String| alias_of(x, y) || same_word(x, y, false, true);
    if wa.len() != wb.len() || wa.len() < 3 || !wa.iter().zip(&wb).all(|(x, y)| same(x, y)) {
        return false;
    }
    // Heavy typos: two words or more misspelt, or one long word, and none
    // short. A short word one letter off may be another name ("deno" and
    // "demo"), whatever else is misspelt.
    let typos: Vec<usize> = wa
        .iter()
        .zip(&wb)
        .filter(|(x, y)| x != y && !alias_of(x, y))
        .map(|(x, y)| x.chars().count().min(y.chars().count()))
        .collect();
    typos.iter().all(|&n| n >= TYPO_MIN_CHARS)
        && (typos.len() >= 2 || typos.iter().any(|&n| n >= 8))
}

/// The shortest misspelt word a typo variant may have ([`typo_variant`]).
const TYPO_MIN_CHARS: usize = 6;

/// How two prompts' content words differ: counts of words only in each,
/// and of words in both (counted on the cached prompt's side).
struct Overlap {
    only_a: usize,
    only_b: usize,
    shared: usize,
}

#[cfg(test)]
mod tests;
