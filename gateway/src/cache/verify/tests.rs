//! Examples written for these tests, not taken from the cache-eval pairs
//! (those are measured as a whole by `switchyard cache calibrate`).

use super::*;

fn check(a: &str, b: &str) -> Result<(), Reason> {
    Verifier::default().check(a, b)
}

#[test]
fn rewordings_typos_filler_and_moved_clauses_pass() {
    for (a, b) in [
        (
            "How do I reverse a list in Python?",
            "how do i reverse a list in python",
        ),
        (
            "How do I reverse a list in Python?",
            "how do i revrese a list in pyhton",
        ),
        (
            "How do I reverse a list in Python?",
            "Hi! How do I reverse a list in Python? Thanks a lot.",
        ),
        (
            "How do I read a file in Rust?",
            "In Rust, how do I read a file?",
        ),
        (
            "Explain photosynthesis simply.",
            "Could you explain photosynthesis simply, please?",
        ),
        ("Wie spät ist es?", "Wie spät ist es?"),
    ] {
        assert_eq!(check(a, b), Ok(()), "{a:?} vs {b:?}");
        assert_eq!(check(b, a), Ok(()), "{b:?} vs {a:?}");
    }
}

#[test]
fn changed_specifics_are_refused_with_their_reason() {
    for (a, b, reason) in [
        (
            "Convert 5 kg to pounds",
            "Convert 8 kg to pounds",
            Reason::Number,
        ),
        (
            "Convert 1,000 meters to feet",
            "Convert 100 meters to feet",
            Reason::Number,
        ),
        (
            "Sort three numbers in C",
            "Sort four numbers in C",
            Reason::Number,
        ),
        (
            "What is the capital of Peru?",
            "What is the capital of Chile?",
            Reason::KeyTerm,
        ),
        (
            "Read a CSV file in Go",
            "Read a CSV file in Ruby",
            Reason::KeyTerm,
        ),
        (
            "Why is the sky blue?",
            "Why isn't the sky blue?",
            Reason::Negation,
        ),
        (
            "How do I enable dark mode?",
            "How do I disable dark mode?",
            Reason::Opposite,
        ),
        (
            "List the benefits of cycling",
            "List the drawbacks of cycling",
            Reason::Opposite,
        ),
        (
            "Is the app secure?",
            "Is the app insecure?",
            Reason::Opposite,
        ),
        (
            "Summarise the article as a table",
            "Summarise the article as a poem",
            Reason::Format,
        ),
        ("Name a planet", "Name every planet", Reason::Scope),
        (
            "Is it safe to drink coffee?",
            "Is it safe to drink coffee when pregnant?",
            Reason::Condition,
        ),
        (
            "what is the weather like in winter",
            "what is the weather like in summer",
            Reason::Time,
        ),
        (
            "Convert kilograms to pounds",
            "Convert pounds to kilograms",
            Reason::Order,
        ),
        (
            "Is every whale a mammal?",
            "Is every mammal a whale?",
            Reason::Order,
        ),
        (
            "What are a landlord's obligations towards a tenant?",
            "What are a tenant's obligations towards a landlord?",
            Reason::Order,
        ),
        (
            "What is the boiling point of water?",
            "What is the boiling point of ethanol?",
            Reason::Substitution,
        ),
        ("北京在哪里？", "上海在哪里？", Reason::Substitution),
        ("北京今天天气怎么样？", "上海明天会下雨吗？", Reason::Script),
    ] {
        assert_eq!(check(a, b), Err(reason), "{a:?} vs {b:?}");
    }
}

#[test]
fn substitution_check_can_be_turned_off() {
    let off = Verifier {
        max_substitution: 0,
        ..Verifier::default()
    };
    let (a, b) = (
        "What is the boiling point of water?",
        "What is the boiling point of ethanol?",
    );
    assert_eq!(off.check(a, b), Ok(()));
}

#[test]
fn tokens_keep_what_names_things() {
    let low = |s: &str| -> Vec<String> { tokenize(s).into_iter().map(|t| t.low).collect() };
    assert_eq!(low("C++ or C#?"), ["c++", "or", "c#"]);
    assert_eq!(low("node.js, don't."), ["node.js", "don't"]);
    assert_eq!(low("I don’t know"), ["i", "don't", "know"]);
    assert_eq!(low("Pi is 3.14!"), ["pi", "is", "3.14"]);
    assert_eq!(low("把100美元"), ["把", "100", "美", "元"]);
    let t = tokenize("Hello. Is Paris big?");
    assert!(t[0].start && t[1].start && !t[2].start);
    assert!(is_key(&t[2]) && !is_key(&t[1]));
}

#[test]
fn numbers_typos_and_stems() {
    assert!(is_number("1,000") && is_number("3.14") && is_number("20%"));
    assert!(!is_number("3.") && !is_number("v2") && !is_number("1.2.3"));
    assert_eq!(edit_distance("recieve", "receive"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert!(same_word("pyhton", "python", true, true));
    assert!(!same_word("slovenia", "slovakia", true, true));
    assert!(!same_word("v1.2", "v1.3", false, true));
    assert_eq!(stem("libraries"), "library");
    assert_eq!(stem("class"), "class");
    assert_eq!(stem("cats"), "cat");
}

#[test]
fn a_rewording_needs_more_similarity_than_the_words_alone() {
    let v = Verifier::default();
    // Two tasks in one frame: each side has more words of its own than the
    // two share, so only the cosine can vouch for them.
    let (a, b) = (
        "How do I handle errors in Go?",
        "How do I check if a file exists in Go?",
    );
    assert_eq!(v.check(a, b), Ok(()));
    assert_eq!(v.check_at(a, b, REWORDED_MIN - 0.01), Err(Reason::Reworded));
    assert_eq!(v.check_at(a, b, REWORDED_MIN), Ok(()));
    // Enough shared words, a superset, or typos: the words vouch for them.
    for (a, b) in [
        (
            "How do I undo my last git commit?",
            "revert the most recent git commit",
        ),
        (
            "What is the boiling point of ethanol?",
            "For my chemistry homework I need to know: what is the boiling point of ethanol?",
        ),
        (
            "How do I reverse a list in Python?",
            "how do i revrese a list in pyhton",
        ),
    ] {
        assert_eq!(v.check_at(a, b, 0.5), Ok(()), "{a:?} vs {b:?}");
    }
    // The word checks still come first.
    assert_eq!(
        v.check_at("Convert 10 km to miles", "Convert 12 km to miles", 0.99),
        Err(Reason::Number)
    );
}

#[test]
fn backstory_before_a_question_is_set_aside_unless_it_names_a_number_or_language() {
    let v = Verifier::default();
    let short = "How do I feed a sourdough starter?";
    let long = "My neighbour gave me a jar of starter last weekend and I have never \
                baked bread before, so I don't want to kill it. How do I feed a sourdough starter?";
    // The whole prompts differ (a time word, a negation)...
    assert!(v.check(long, short).is_err());
    // ...the question does not, in either order.
    assert_eq!(v.check_at(long, short, 0.8), Ok(()));
    assert_eq!(v.check_at(short, long, 0.8), Ok(()));
    // Turned off, the whole prompts decide.
    let off = Verifier {
        backstory: false,
        ..v
    };
    assert_eq!(off.check_at(long, short, 0.8), v.check(long, short));
    // A question that differs is still refused, for its own reason.
    let france = "My sister keeps quizzing me on geography. What is the capital of France?";
    assert!(
        v.check_at(france, "What is the capital of Spain?", 0.8)
            .is_err()
    );
    assert_eq!(
        v.check_at(france, "What is the capital of France?", 0.8),
        Ok(())
    );
    for (context_matters, short) in [
        // A version or a quantity in the context can change the answer.
        (
            "I'm stuck on Python 2 at work. How do I print a line?",
            "How do I print a line?",
        ),
        (
            "I have 3 kids and a dog. How big a car should I buy?",
            "How big a car should I buy?",
        ),
        // So can a language the question does not name.
        (
            "I'm writing Go these days. How do I reverse a list?",
            "How do I reverse a list?",
        ),
        // Instructions after the question are not context.
        (
            "Is 57 a prime number? Answer only yes or no.",
            "Is 57 a prime number?",
        ),
        // Nor are instructions before it, nor a format or a number word,
        // nor digits glued to a unit, a name, a scope word, or a negated
        // verb of using or having.
        (
            "I weigh 80kg. How much protein should I eat a day?",
            "How much protein should I eat a day?",
        ),
        (
            "I'm on a Mac. How do I take a screenshot?",
            "How do I take a screenshot?",
        ),
        (
            "I'm writing Elixir these days. How do I reverse a list?",
            "How do I reverse a list?",
        ),
        (
            "I only need a brief answer. What causes inflation?",
            "What causes inflation?",
        ),
        (
            "I can't use any libraries. How do I parse a CSV file in Python?",
            "How do I parse a CSV file in Python?",
        ),
        (
            "Reply in JSON. What are the planets in the solar system?",
            "What are the planets in the solar system?",
        ),
        (
            "Don't use any libraries. How do I parse a CSV file in Python?",
            "How do I parse a CSV file in Python?",
        ),
        (
            "I need this for a slide. What is the capital of Australia in one word?",
            "What is the capital of Australia?",
        ),
        (
            "We are a family of four. How much rice should we cook?",
            "How much rice should we cook?",
        ),
        // A condition told in plain words changes advice.
        (
            "I'm allergic to nuts. What is a good snack for a long hike?",
            "What is a good snack for a long hike?",
        ),
        (
            "It's winter here. What vegetables can I plant now?",
            "What vegetables can I plant now?",
        ),
        (
            "im on windows and new to coding. How do I install git?",
            "How do I install git?",
        ),
        // A question that points back into its context does not stand
        // alone, and one with no words of its own says nothing.
        (
            "My dog Max ate a grape. Is that dangerous?",
            "Is it dangerous to eat raw chicken?",
        ),
        ("I have a question. ?", "What is Rust?"),
        // The question's words must carry the match.
        (
            "My neighbour asked me about snakes yesterday. Are snakes dangerous?",
            "Are snakes dangerous to keep as pets in a small flat?",
        ),
    ] {
        assert!(
            v.check_at(context_matters, short, 0.9).is_err(),
            "{context_matters:?} vs {short:?}"
        );
    }
    // Only one side may have context: two backstories are compared whole.
    let other = "I bake every Sunday for my family. How do I feed a sourdough starter?";
    assert!(v.check_at(long, other, 0.9).is_err());
    // A decimal point or an abbreviation is no sentence end.
    assert_eq!(final_question("Is 3.5 bigger than e.g.?"), None);
    assert_eq!(
        final_question("I tried. Then? What next?"),
        Some("What next?")
    );
}

#[test]
fn greetings_name_no_time_and_a_language_may_go_by_its_short_name() {
    let v = Verifier::default();
    assert_eq!(
        v.check(
            "Good morning! How do I undo a git rebase?",
            "How do I undo a git rebase?"
        ),
        Ok(())
    );
    // A time of day that is not a greeting still counts...
    assert_eq!(
        v.check("Is it good to run in the morning?", "Is it good to run?"),
        Err(Reason::Time)
    );
    assert_eq!(
        v.check(
            "What's a good night routine?",
            "What's a good morning routine?"
        ),
        Err(Reason::Time)
    );
    // ...and "good" spares no other kind of word.
    assert_eq!(
        v.check("Write a good poem about the sea.", "Write about the sea."),
        Err(Reason::Format)
    );
    assert_eq!(
        v.check(
            "How do I parse a date in js?",
            "How do I parse a date in JavaScript?"
        ),
        Ok(())
    );
    assert_eq!(
        v.check(
            "How do I parse a date in py?",
            "How do I parse a date in JavaScript?"
        ),
        Err(Reason::KeyTerm)
    );
    // The short name is a key term of its own: it must be in the other prompt.
    assert_eq!(
        v.check("How do I parse a date in ts?", "How do I parse a date?"),
        Err(Reason::KeyTerm)
    );
}

#[test]
fn long_words_match_only_when_equal() {
    let (a, b) = ("x".repeat(5_000), format!("{}y", "x".repeat(4_999)));
    assert_eq!(edit_distance(&a, &b), 3);
    assert!(!same_word(&a, &b, false, true));
    assert!(same_word(&a, &a.clone(), false, true));
    // Ordinary words still allow a typo.
    assert_eq!(edit_distance("receive", "recieve"), 1);
}

#[test]
fn words_added_to_the_request_narrow_it_but_added_pleasantries_do_not() {
    let v = Verifier::default();
    for (narrow, broad) in [
        (
            "What's your return policy for shoes?",
            "What's your return policy?",
        ),
        (
            "What are the stomach-related side effects of ibuprofen?",
            "What are the side effects of ibuprofen?",
        ),
        (
            "Quels sont les symptômes de la grippe chez l'enfant ?",
            "Quels sont les symptômes de la grippe ?",
        ),
    ] {
        assert_eq!(
            v.check(narrow, broad),
            Err(Reason::Qualifier),
            "{narrow:?} vs {broad:?}"
        );
        assert_eq!(v.check(broad, narrow), Err(Reason::Qualifier));
    }
    for (chatty, plain) in [
        // A clause of its own asks for nothing more...
        (
            "Hey there, sorry to bother you, but how do I cancel my subscription?",
            "How do I cancel my subscription?",
        ),
        (
            "Sorry if this is a dumb question, but what does RAM stand for?",
            "What does RAM stand for?",
        ),
        // ...nor do pleasantries, framing words and misspelt function
        // words within the request.
        (
            "lemme know how many players are on a soccer team",
            "How many players are on a soccer team?",
        ),
        (
            "wat is the distnace from earth to the moon",
            "What is the distance from Earth to the Moon?",
        ),
        (
            "Describe the process of photosynthesis.",
            "What is photosynthesis?",
        ),
    ] {
        assert_eq!(v.check(chatty, plain), Ok(()), "{chatty:?} vs {plain:?}");
    }
    // The price: a harmless added word is refused too.
    assert_eq!(
        v.check(
            "What causes thunderstorms?",
            "What causes thunderstorms to form?"
        ),
        Err(Reason::Qualifier)
    );
    // A misspelling is forgiven only near a function word: "cat" is one
    // edit from "can", which is not in the list.
    assert_eq!(
        v.check("What should I feed a cat?", "What should I feed?"),
        Err(Reason::Qualifier)
    );
}

#[test]
fn each_word_pairs_with_one_word_on_the_other_side() {
    let v = Verifier::default();
    // "requests" (the library) finds "request" already paired with the
    // other "request", so it is a word of its own against "httpx".
    assert_eq!(
        v.check(
            "How do I make an HTTP POST request in Python with requests?",
            "How do I make an HTTP POST request in Python with httpx?"
        ),
        Err(Reason::Substitution)
    );
    // A misspelling still pairs after the exact words have.
    assert_eq!(
        v.check(
            "How do I install numpy with pip?",
            "how do i instal numpy wiht pip"
        ),
        Ok(())
    );
}

#[test]
fn inflected_opposites_and_line_formats_are_seen() {
    let v = Verifier::default();
    assert_eq!(
        v.check(
            "List the features included in the Premium plan.",
            "List the features excluded from the Premium plan."
        ),
        Err(Reason::Opposite)
    );
    assert_eq!(
        v.check(
            "Why has the backup service stopped?",
            "Why has the backup service started?"
        ),
        Err(Reason::Opposite)
    );
    assert_eq!(
        v.check(
            "List the planets from the Sun as a numbered list.",
            "List the planets from the Sun as a single comma-separated line."
        ),
        Err(Reason::Format)
    );
}

#[test]
fn negations_are_counted_in_other_languages_too() {
    let v = Verifier::default();
    for (a, b) in [
        (
            "Wann sollte man Antibiotika einnehmen?",
            "Wann sollte man keine Antibiotika einnehmen?",
        ),
        (
            "¿Cuándo debo tomar antibióticos?",
            "¿Cuándo no debo tomar antibióticos?",
        ),
        (
            "Quand faut-il prendre des antibiotiques ?",
            "Quand ne faut-il pas prendre des antibiotiques ?",
        ),
        ("什么时候应该吃抗生素？", "什么时候不应该吃抗生素？"),
    ] {
        assert_eq!(v.check(a, b), Err(Reason::Negation), "{a:?} vs {b:?}");
    }
}

#[test]
fn may_the_verb_sign_offs_and_abbreviated_units_name_no_other_time() {
    let v = Verifier::default();
    assert_eq!(
        v.check("How may I obtain a refund?", "How can I obtain a refund?"),
        Ok(())
    );
    // The month, written in lower case, is still a time.
    assert_eq!(
        v.check(
            "What is the weather like in may?",
            "What is the weather like in june?"
        ),
        Err(Reason::Time)
    );
    assert_eq!(
        v.check(
            "What is the weather like in may?",
            "What is the weather like?"
        ),
        Err(Reason::Time)
    );
    assert_eq!(
        v.check(
            "Morning! What year did the Berlin Wall fall?",
            "What year did the Berlin Wall fall?"
        ),
        Ok(())
    );
    assert_eq!(
        v.check(
            "Explain Rust ownership in simple terms. Thank you, have a great day.",
            "Explain Rust ownership in simple terms."
        ),
        Ok(())
    );
    assert_eq!(
        v.check(
            "how many days in a leap yr",
            "How many days are in a leap year?"
        ),
        Ok(())
    );
    assert_eq!(
        v.check(
            "how many days in a leap yr",
            "How many days are in a leap week?"
        ),
        Err(Reason::Time)
    );
}

#[test]
fn words_joined_by_and_or_or_may_swap_but_other_words_may_not() {
    for (a, b) in [
        (
            "In Go, what's the difference between a slice and an array?",
            "What's the difference between an array and a slice in Go?",
        ),
        (
            "Should I learn Vue or React first?",
            "Should I learn React or Vue first?",
        ),
        (
            "Compare Lima and Quito for a three-day trip.",
            "For a three-day trip, compare Quito and Lima.",
        ),
    ] {
        assert_eq!(check(a, b), Ok(()), "{a:?} vs {b:?}");
        assert_eq!(check(b, a), Ok(()), "{b:?} vs {a:?}");
    }
    // Not joined by "and": the order still decides.
    assert_eq!(
        check(
            "How do I turn a string into an integer?",
            "How do I turn an integer into a string?"
        ),
        Err(Reason::Order)
    );
    // "and then" joins steps, whose order matters.
    assert_eq!(
        check(
            "Should I stretch and then run?",
            "Should I run and then stretch?"
        ),
        Err(Reason::Order)
    );
}

#[test]
fn a_list_joined_to_the_question_widens_it() {
    for (narrow, wide) in [
        (
            "What does npm ci do?",
            "What do npm ci, npm install and npm update do?",
        ),
        (
            "What is a mutex?",
            "What is a mutex, and when should I use a semaphore instead?",
        ),
    ] {
        assert_eq!(check(narrow, wide), Err(Reason::Qualifier), "{wide:?}");
        assert_eq!(check(wide, narrow), Err(Reason::Qualifier), "{wide:?}");
    }
    // An added clause that joins nothing to the question is still an aside.
    assert_eq!(
        check("Hey friend, what does npm ci do?", "What does npm ci do?"),
        Ok(())
    );
}

#[test]
fn scope_words_are_seen_in_other_languages_too() {
    for (a, b) in [
        (
            "¿Cuál es el lago más grande de Chile?",
            "Enumera todos los lagos de Chile por tamaño.",
        ),
        (
            "Quel est le plus haut sommet des Alpes ?",
            "Quels sont tous les sommets des Alpes ?",
        ),
        (
            "Welche Zutaten braucht man für Pfannkuchen?",
            "Welche Zutaten braucht man nur für Pfannkuchen?",
        ),
    ] {
        assert_eq!(check(a, b), Err(Reason::Scope), "{a:?} vs {b:?}");
    }
}

#[test]
fn negations_without_apostrophes_or_misspelt_count_but_the_askers_own_do_not() {
    for (a, b) in [
        (
            "How do I quit nano without saving?",
            "how do i quit nano witout saving",
        ),
        ("Why doesn't my cron job run?", "why doesnt my cron job run"),
        ("What is a monad?", "i dont get what a monad is"),
        ("How does TLS work?", "I'm not sure, how does TLS work?"),
    ] {
        assert_eq!(check(a, b), Ok(()), "{a:?} vs {b:?}");
        assert_eq!(check(b, a), Ok(()), "{b:?} vs {a:?}");
    }
    for (a, b) in [
        ("Why does my cron job run?", "why doesnt my cron job run"),
        (
            "Can I get a refund for digital items?",
            "I dont get a refund for digital items?",
        ),
    ] {
        assert_eq!(check(a, b), Err(Reason::Negation), "{a:?} vs {b:?}");
    }
}

#[test]
fn where_a_search_looks_is_its_scope() {
    assert_eq!(
        check(
            "How do I find the biggest log file in this folder?",
            "How do I find the biggest log files anywhere on the disk, recursively?"
        ),
        Err(Reason::Scope)
    );
}

#[test]
fn using_since_and_because_only_join_a_moved_clause() {
    for (a, b) in [
        (
            "Using Kotlin, how do I parse a date string?",
            "How do I parse a date string in Kotlin?",
        ),
        (
            "Since I have asthma, can I run a marathon?",
            "Can I run a marathon if I have asthma?",
        ),
    ] {
        assert_eq!(check(a, b), Ok(()), "{a:?} vs {b:?}");
        assert_eq!(check(b, a), Ok(()), "{b:?} vs {a:?}");
    }
}

#[test]
fn names_one_letter_apart_are_different_names_unless_one_is_written_casually() {
    for (a, b) in [
        (
            "Which languages are spoken in Iran?",
            "Which languages are spoken in Iraq?",
        ),
        ("How old is Mount Fuji?", "How old is Mount Fiji?"),
        // Both capitalised: spelled with care, so spelled as meant.
        (
            "What is the GDP of Slovenia?",
            "What is the GDP of Slovania?",
        ),
    ] {
        assert_eq!(check(a, b), Err(Reason::KeyTerm), "{a:?} vs {b:?}");
        assert_eq!(check(b, a), Err(Reason::KeyTerm), "{b:?} vs {a:?}");
    }
    for (a, b) in [
        // A casual writer's typo in a longer name still matches.
        (
            "What is the GDP of Slovenia?",
            "what is the gdp of slovania",
        ),
        // Accents are not letters: Perú is peru.
        ("¿Cuál es la moneda de Perú?", "cual es la moneda de peru"),
        (
            "Wie teuer ist ein Zimmer in Zürich?",
            "Wie teuer ist ein Zimmer in Zurich?",
        ),
    ] {
        assert_eq!(check(a, b), Ok(()), "{a:?} vs {b:?}");
        assert_eq!(check(b, a), Ok(()), "{b:?} vs {a:?}");
    }
}

#[test]
fn a_word_is_not_a_typo_of_another_word() {
    // Both are English words: another question, however close the letters.
    for (a, b) in [
        (
            "How do I bake bread at home?",
            "How do I make bread at home?",
        ),
        (
            "How long should I boil broccoli?",
            "How long should I broil broccoli?",
        ),
        (
            "Write a toast for my sister's wedding.",
            "Write a roast for my sister's wedding.",
        ),
        (
            "What is the population of iran",
            "whats the population of iraq",
        ),
    ] {
        assert!(check(a, b).is_err(), "{a:?} vs {b:?}");
    }
    // A misspelling is no word, and still passes.
    assert_eq!(
        check(
            "How do I bake bread at home?",
            "how do i bake braed at home"
        ),
        Ok(())
    );
    assert!(is_word("moose") && is_word("mouse") && !is_word("brocoli"));
    assert!(!same_word("moose", "mouse", false, true));
    // Outside English text the word list says nothing: "cual" is "Cuál".
    assert_eq!(
        check("¿Cuál es la capital de Perú?", "cual es la capital de peru"),
        Ok(())
    );
    assert!(same_word("kochen", "kochn", false, false));
}

#[test]
fn short_unknown_words_and_capital_acronyms_keep_every_letter() {
    // Two unknown words under six letters are names or acronyms.
    assert!(
        check(
            "How do I decompress a gzip file?",
            "How do I decompress a bzip file?"
        )
        .is_err()
    );
    assert!(!same_word("gzip", "bzip", false, true));
    assert!(same_word("kubernetes", "kubernets", false, true));
    // A final S in capitals is a letter, not a plural.
    assert_eq!(
        check("What port does HTTP use?", "What port does HTTPS use?"),
        Err(Reason::KeyTerm)
    );
    assert_eq!(
        check("How do I list my APIs?", "how do i list my API?"),
        Ok(())
    );
    assert_eq!(
        check(
            "What is the difference between HTTP and HTTPS?",
            "whats the difference between http and https"
        ),
        Ok(())
    );
    // A prompt in capitals throughout is shouted, not an acronym list.
    assert_eq!(
        check(
            "How many calories are in a banana?",
            "HOW MANY CALORIES ARE IN A BANANA"
        ),
        Ok(())
    );
}

#[test]
fn a_question_typed_in_a_hurry_needs_less_similarity() {
    let v = Verifier::default();
    let t = 0.6;
    for (a, b) in [
        ("What causes earthquakes?", "what causes earthquaks"),
        (
            "How do I change my delivery address?",
            "how do I chnage my delivry adress?",
        ),
        (
            "How do you declare a constant in Go?",
            "how do u delcare a constnat in go",
        ),
        // So many typos that the copy no longer reads as English: the
        // other prompt does.
        (
            "Explain recursion with an example.",
            "explian recurson with an exmaple",
        ),
    ] {
        assert!(
            (v.threshold_for(a, b, t) - (t - TYPO_MARGIN)).abs() < 1e-6,
            "{a:?} vs {b:?}"
        );
    }
    for (a, b) in [
        // Another word, not a typo.
        ("What is the plural of mouse?", "whats the plural of moose"),
        // One short word one letter off may be another name.
        (
            "How do I install deno on a mac?",
            "how do i install demo on a mac",
        ),
        // Not the same words.
        ("What causes earthquakes?", "why do earthquakes happen"),
        // Not English: the word list cannot tell.
        (
            "¿Cómo hago para rastrear mi pedido?",
            "como hago para rastrear mi pedio",
        ),
        // No typo at all.
        ("What causes earthquakes?", "what causes earthquakes"),
    ] {
        assert_eq!(v.threshold_for(a, b, t), t, "{a:?} vs {b:?}");
    }
}

#[test]
fn stems_shouting_and_short_typos_do_not_open_the_typo_allowance() {
    // A stem is known by its word: "campu" is campus, not a misspelt camp.
    assert!(
        check(
            "How big is the campus at my university?",
            "How big is the camp at my university?"
        )
        .is_err()
    );
    // A shouted prompt's plural is a plural.
    assert_eq!(
        check(
            "How many calories are in a banana?",
            "HOW MANY CALORIES ARE IN BANANAS"
        ),
        Ok(())
    );
    let t = tokenize("Is 2FA on for B2B and A?");
    let caps: Vec<bool> = t.iter().map(|t| t.capitals).collect();
    assert_eq!(caps, [false, true, false, false, true, false, false]);
    let v = Verifier::default();
    let t = 0.6;
    for (a, b) in [
        // A short word one letter off, whatever else is misspelt.
        (
            "How do I install deno on a mac?",
            "how do i instal demo on a mac",
        ),
        // Fewer than three words.
        ("Kubernetes tutorials", "kubernets tutorails"),
        // An alias is no typo.
        (
            "How do I sort an array in JavaScript?",
            "how do i sort an array in js",
        ),
    ] {
        assert_eq!(v.threshold_for(a, b, t), t, "{a:?} vs {b:?}");
    }
    // Off (as in a group with audits on): the threshold as given.
    let off = Verifier {
        typo_variants: false,
        ..Verifier::default()
    };
    let (a, b) = ("What causes earthquakes?", "what causes earthquaks");
    assert!(v.threshold_for(a, b, t) < t);
    assert_eq!(off.threshold_for(a, b, t), t);
    // At least half English; characters of Chinese count as unknown words.
    assert!(english(&tokenize("wie lang ist the river")));
    assert!(!english(&tokenize("如何安装 kubernetes")));
    assert!(!english(&tokenize("")));
}

#[test]
fn a_negation_in_a_polite_hedge_does_not_count() {
    let n = |text: &str| negations(&tokenize(text));
    assert_eq!(
        n("Quick question, if you don't mind: is ibuprofen safe?"),
        0
    );
    assert_eq!(
        n("If it's not too much trouble, translate 'hello' into Czech."),
        0
    );
    assert_eq!(
        n("Hiya, hope I'm not interrupting - what is 12 squared?"),
        0
    );
    assert_eq!(
        n("Good evening! If you don't mind me asking, how many grams are in a pound?"),
        0
    );
    assert_eq!(
        n("I hope this isn't a dumb question, but why is the sky blue?"),
        0
    );
    // A clause that says more than politeness counts.
    assert_eq!(n("I don't eat meat, what should I cook tonight?"), 1);
    assert_eq!(n("Don't explain, just give me the regex."), 1);
    assert_eq!(n("If you don't mind spicy food, what should I cook?"), 1);
    // A hyphen inside a word, or before a flag, is no dash.
    assert_eq!(n("What does the -r flag do if it's not recursive?"), 1);
    assert_eq!(
        check(
            "Is ibuprofen safe to take with coffee?",
            "Quick question, if you don't mind: is ibuprofen safe to take with coffee? thanks!"
        ),
        Ok(())
    );
}

#[test]
fn days_and_months_in_a_backstory_only_tell_the_story() {
    let q = "Can you explain what a closure is?";
    assert_eq!(
        final_question(&format!("I have an interview next Tuesday. {q}")),
        Some(q)
    );
    assert_eq!(
        final_question(&format!("My exam is in March, and I'm nervous. {q}")),
        Some(q)
    );
    // Other names still keep the context.
    assert_eq!(final_question(&format!("I'm on a Mac. {q}")), None);
    assert_eq!(final_question(&format!("I use Python at work. {q}")), None);
}

#[test]
fn format_and_scope_words_in_a_backstory_count_only_when_asked_for() {
    // Told in the story, they tell it.
    for (story, q) in [
        (
            "Every night my cat climbs onto my lap and kneads the blanket.",
            "Why do cats knead blankets?",
        ),
        (
            "I've tried all the settings pages and can't find it anywhere obvious.",
            "How do I update my billing address?",
        ),
        (
            "I'm writing an email to my manager and always second-guess myself.",
            "What is the difference between affect and effect?",
        ),
        (
            "Estoy siguiendo una receta americana y solo tengo una báscula de cocina.",
            "¿Cuántos gramos hay en una taza de harina?",
        ),
        // "Fall" is autumn.
        (
            "My grandmother says fall is her favourite season.",
            "Could you write a haiku about autumn rain?",
        ),
    ] {
        assert_eq!(final_question(&format!("{story} {q}")), Some(q), "{story}");
    }
    // Asked for (a wish, an obligation, "please", or a short fragment with
    // no one in it), they shape the answer.
    let q = "What are the planets in our solar system?";
    for story in [
        "For the quiz I only need their names.",
        "It has to be a single sentence for my slide.",
        "Bullet points please, it's for my kid.",
        "Just the names.",
        "One sentence max.",
    ] {
        assert_eq!(final_question(&format!("{story} {q}")), None, "{story}");
    }
    // Seasons other than autumn are still conditions.
    assert_eq!(
        final_question("My grandmother loves spring. Could you write a haiku about autumn rain?"),
        None
    );
}

#[test]
fn context_written_all_in_lower_case_is_not_set_aside() {
    let v = Verifier::default();
    // A place no check can see: the writer capitalises nothing.
    for (told, bare) in [
        (
            "i live in texas. what is the minimum wage?",
            "What is the minimum wage?",
        ),
        (
            "i live in california, what is the minimum wage",
            "what is the minimum wage",
        ),
    ] {
        assert!(v.check_at(told, bare, 0.8).is_err(), "{told}");
        assert!(v.check_at(bare, told, 0.8).is_err(), "{told}");
    }
    // Written with capitals, a context clause with no name still is...
    assert_eq!(
        v.check_at(
            "Sorry if this is a dumb question, but what is the minimum wage?",
            "What is the minimum wage?",
            0.8
        ),
        Ok(())
    );
    // ...and one that names a place is refused for it.
    assert_eq!(
        v.check_at(
            "I live in Texas. What is the minimum wage?",
            "What is the minimum wage?",
            0.8
        ),
        Err(Reason::KeyTerm)
    );
    // In lower case, an added clause of pleasantries alone still passes.
    assert_eq!(
        v.check_at(
            "hey friend, what is the minimum wage",
            "what is the minimum wage",
            0.8
        ),
        Ok(())
    );
}

#[test]
fn german_capitals_name_nothing_but_german_names_still_count() {
    let v = Verifier::default();
    // Every German noun has a capital: greetings and "Kurze Frage" added
    // around a question name nothing.
    for (a, b) in [
        (
            "Wie lange kocht man Spaghetti?",
            "Hallo! Kurze Frage: Wie lange kocht man Spaghetti? Danke schön!",
        ),
        (
            "Wie lange gilt die Garantie auf dieses Produkt?",
            "Hallo, entschuldigen Sie die Störung. Wie lange gilt die Garantie auf \
             dieses Produkt? Vielen Dank im Voraus!",
        ),
    ] {
        assert_eq!(v.check_at(a, b, 0.8), Ok(()), "{b}");
    }
    // A name swapped or added is refused as a lower-case English one is.
    for (a, b, reason) in [
        (
            "Wie viele Einwohner hat Hamburg?",
            "Wie viele Einwohner hat München?",
            Reason::Substitution,
        ),
        (
            "Wie lange ist ein Reisepass gültig?",
            "Wie lange ist ein Reisepass in Deutschland gültig?",
            Reason::Qualifier,
        ),
        // In German a name in added context cannot be seen, so the
        // context is never set aside.
        (
            "Hallo! Ich wohne in Köln. Wie viel Trinkgeld gibt man?",
            "Wie viel Trinkgeld gibt man?",
            Reason::Qualifier,
        ),
    ] {
        assert_eq!(v.check_at(a, b, 0.8), Err(reason), "{b}");
    }
    // English capitals still name things.
    assert_eq!(
        v.check_at(
            "How many people live in Hamburg?",
            "How many people live in Munich?",
            0.8
        ),
        Err(Reason::KeyTerm)
    );
}

#[test]
fn whole_phrases_may_move_with_their_openers() {
    let v = Verifier::default();
    for (a, b) in [
        (
            "What is the monthly payment on a $250,000 mortgage at 6% over 30 years?",
            "Over 30 years at 6%, what is the monthly payment on a $250,000 mortgage?",
        ),
        (
            "If my flight is delayed more than three hours, am I entitled to \
             compensation under EU rules?",
            "Under EU rules, am I entitled to compensation if my flight is delayed \
             more than three hours?",
        ),
        (
            "When traveling to Japan, do I need a visa as a US citizen?",
            "As a US citizen, do I need a visa when traveling to Japan?",
        ),
    ] {
        assert_eq!(v.check(a, b), Ok(()), "{a:?} vs {b:?}");
    }
    // Names that trade places around prepositions that stay, or two
    // phrases with the same opener that trade places, change the question.
    for (a, b) in [
        (
            "How long is the flight from London to New York?",
            "How long is the flight from New York to London?",
        ),
        ("Convert 10 km to miles.", "Convert 10 miles to km."),
        (
            "In London, what time is it when it's 9 AM in Tokyo?",
            "In Tokyo, what time is it when it's 9 AM in London?",
        ),
        (
            "When it's 3 PM in Paris, what time is it in New York?",
            "When it's 3 PM in New York, what time is it in Paris?",
        ),
        (
            "Translate 'hello' from French into English.",
            "Translate 'hello' into French from English.",
        ),
        (
            "Can I bring food on a plane from the US to Canada?",
            "Can I bring food on a plane to the US from Canada?",
        ),
    ] {
        assert_eq!(v.check(a, b), Err(Reason::Order), "{a:?} vs {b:?}");
    }
}

#[test]
fn a_one_letter_language_is_a_name_only_as_a_capital() {
    let v = Verifier::default();
    let keys = |text: &str| -> Vec<String> {
        tokenize(text)
            .into_iter()
            .filter(is_key)
            .map(|t| t.surface)
            .collect()
    };
    assert!(keys("how r they different").is_empty());
    assert!(keys("whats the c to f formula").is_empty());
    assert_eq!(keys("how do i read a csv in R"), ["R"]);
    // Written as names, they are names.
    assert_eq!(
        v.check_at(
            "How do I read a CSV file in R?",
            "How do I read a CSV file in C?",
            0.8
        ),
        Err(Reason::KeyTerm)
    );
    assert_eq!(
        v.check_at(
            "How do I read a CSV file in R?",
            "How do I read a CSV file?",
            0.8
        ),
        Err(Reason::KeyTerm)
    );
}

#[test]
fn number_words_count_in_the_other_languages_too() {
    assert_eq!(
        check(
            "¿Cuál es el río más largo de España?",
            "¿Cuáles son los diez ríos más largos de España?"
        ),
        Err(Reason::Number)
    );
    assert_eq!(
        check(
            "Nenne drei Flüsse in Bayern.",
            "Nenne vier Flüsse in Bayern."
        ),
        Err(Reason::Number)
    );
    // Words that are also other words are not read as numbers.
    assert_eq!(
        numbers(
            &tokenize("When is the rent due? Dos and don'ts, one cent"),
            &[]
        ),
        std::collections::BTreeSet::new()
    );
}

/// The textbook table, to check the one on the stack against.
#[test]
fn a_swapped_thing_is_a_substitution_however_few_words_are_shared() {
    let v = Verifier::default();
    // One word against two, sharing a single word: only knowing that a
    // gym, a city, a plant or potassium is a thing tells these apart.
    for (a, b) in [
        (
            "How do I cancel my subscription?",
            "How do I cancel my gym membership?",
        ),
        (
            "What is the capital of Australia?",
            "What is the biggest city in Australia?",
        ),
        (
            "How do I care for a cactus?",
            "How do I care for a snake plant?",
        ),
        (
            "How many calories are in a banana?",
            "How much potassium is in a banana?",
        ),
        ("How long do cats live?", "How long do pet rabbits live?"),
        (
            "Is it safe to eat raw eggs?",
            "Is it safe to eat raw cookie dough?",
        ),
    ] {
        assert_eq!(v.check(a, b), Err(Reason::Substitution), "{a:?} vs {b:?}");
    }
    assert!(is_thing(&tokenize("cats")[0]));
    assert!(!is_thing(&tokenize("procedure")[0]));
}

#[test]
fn one_word_reworded_as_two_is_a_paraphrase_within_the_question() {
    let v = Verifier::default();
    for (a, b) in [
        (
            "What's a good substitute for buttermilk in baking?",
            "What can I use instead of buttermilk when baking?",
        ),
        (
            "What is the procedure for preparing cold brew coffee at home?",
            "wanna know how to make cold brew coffee at home",
        ),
        // Inflections pair by their stem ("differ", "difference").
        (
            "How do Python lists differ from tuples?",
            "What's the difference between a list and a tuple in Python?",
        ),
        // One word written as two, and a word said again.
        (
            "Why is my sourdough starter not rising?",
            "why is my sour dough starter not rising",
        ),
        (
            "What's the difference between a Roth IRA and a traditional IRA?",
            "Explain how Roth and traditional IRAs are different.",
        ),
        (
            "Explain the difference between let and const in JavaScript.",
            "Hey! Would you mind explaining the difference between let and const in JavaScript?",
        ),
    ] {
        assert_eq!(v.check(a, b), Ok(()), "{a:?} vs {b:?}");
    }
    // An instruction of its own on each side is no rewording.
    assert_eq!(
        v.check(
            "Convert 1.5 hours to minutes, just the number.",
            "Convert 1.5 hours to minutes and show the working."
        ),
        Err(Reason::Substitution)
    );
    // A library named again after "request" is still a word of its own.
    assert_eq!(
        v.check(
            "How do I make an HTTP POST request in Python with requests?",
            "How do I make an HTTP POST request in Python?"
        ),
        Err(Reason::Qualifier)
    );
}

#[test]
fn verbs_that_say_not_and_words_joined_by_a_slash() {
    let v = Verifier::default();
    assert_eq!(
        v.check(
            "Which foods should I eat more of when I have gout?",
            "Which foods should I avoid when I have gout?"
        ),
        Err(Reason::Negation)
    );
    assert_eq!(
        v.check(
            "In CSS, how do I make text wrap inside a flex item?",
            "In CSS, how do I prevent text from wrapping inside a flex item?"
        ),
        Err(Reason::Negation)
    );
    assert_eq!(
        v.check(
            "Give me a 5-question multiple-choice quiz about the solar system.",
            "Give me a 5-question true/false quiz about the solar system."
        ),
        Err(Reason::Format)
    );
    assert_eq!(tokenize("true/false, w/ love, 1/2")[0].low, "true/false");
    assert_eq!(
        v.check(
            "bro my sink's clogged, how do i fix it w/o calling a plumber",
            "bro my sink's clogged, how do i fix it calling a plumber"
        ),
        Err(Reason::Negation)
    );
}

#[test]
fn a_percentage_is_its_own_number() {
    let v = Verifier::default();
    // The sign used to fall away with the punctuation.
    assert_eq!(
        v.check("Reduce the price by 20%.", "Reduce the price by 20."),
        Err(Reason::Number)
    );
    for b in ["whats 15 percent of 240", "What is 15 per cent of 240?"] {
        assert_eq!(v.check("What is 15% of 240?", b), Ok(()), "{b:?}");
    }
    assert_eq!(
        v.check("What is 15% of 240?", "What is 15 of 240 percent?"),
        Err(Reason::Number)
    );
    assert_eq!(tokenize("15 per cent")[0].low, "15%");
}

#[test]
fn numbers_in_hyphenated_words_and_chat_spellings() {
    let v = Verifier::default();
    for (a, b) in [
        (
            "How do I reset my two-factor authentication?",
            "how do I reset my two factor authentication",
        ),
        (
            "bash command to count lines in all .log files in a directory",
            "quick q — bash command to count lines in all .log files in a directory? cheers",
        ),
        (
            "Rust: difference between String and &str",
            "Hello! Hope your day is going well. Rust: difference between String and &str? Thanks!",
        ),
        (
            "Wie viele Einwohner hat Hamburg?",
            "Hallo! Kurze Frage: Wie viele Einwohner hat Hamburg? Danke dir!",
        ),
        (
            "kinda confused, whats the diff between let and const in js",
            "whats the difference between let and const in js",
        ),
    ] {
        assert_eq!(v.check(a, b), Ok(()), "{a:?} vs {b:?}");
    }
    assert!(
        v.check(
            "Make a five-question quiz on Rome.",
            "Make a ten-question quiz on Rome."
        )
        .is_err()
    );
    // A story's "four-year-old" still names no number of its own.
    assert_eq!(numbers(&tokenize("My four-year-old asked."), &[]).len(), 0);
    // The day of a date still counts.
    assert_eq!(
        v.check(
            "What time does your store open?",
            "What time does your store open today?"
        ),
        Err(Reason::Time)
    );
    // "mac" is "macOS", for the key term and the condition alike.
    assert_eq!(
        v.check(
            "How do I take a screenshot on my mac?",
            "How do I take a screenshot on macOS?"
        ),
        Ok(())
    );
    assert_eq!(
        v.check(
            "How do I take a screenshot on my mac?",
            "How do I take a screenshot on Windows?"
        ),
        Err(Reason::KeyTerm)
    );
}

#[test]
fn a_colon_may_introduce_the_question_after_a_story() {
    let v = Verifier::default();
    let q = "What's the SI unit of electrical resistance?";
    let story = "My kid is doing physics homework tonight and asked me something I forgot \
                 from school, so I'd like to double-check: what's the SI unit of electrical \
                 resistance?";
    assert_eq!(
        final_question(story),
        Some("what's the SI unit of electrical resistance?")
    );
    assert_eq!(v.check_at(q, story, 0.8), Ok(()));
    // The story before the colon is still read: it names Python here.
    assert_eq!(
        final_question("I have been learning Python for a week: how do I reverse a list?"),
        None
    );
}

fn reference_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]));
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[test]
fn edit_distance_matches_the_textbook_table() {
    let words = [
        "",
        "a",
        "ab",
        "ba",
        "abc",
        "acb",
        "recieve",
        "receive",
        "kitten",
        "sitting",
        "wihtout",
        "without",
        "cannnot",
        "cannot",
        "Perú",
        "peru",
        "earthquaks",
        "earthquakes",
        "ca",
        "abc",
        "flaw",
        "lawn",
        "zürich",
        "zurich",
    ];
    for a in words {
        for b in words {
            let want = reference_distance(a, b);
            let got = edit_distance(a, b);
            if a.chars().count().abs_diff(b.chars().count()) > 2 {
                assert_eq!(got, 3, "{a:?} {b:?}");
            } else {
                assert_eq!(got, want, "{a:?} {b:?}");
            }
        }
    }
    let long = "x".repeat(MAX_FUZZY_CHARS);
    assert_eq!(edit_distance(&long, &long), 0);
    assert_eq!(edit_distance(&format!("{long}y"), &format!("{long}y")), 3);
}
