//! # The question templates, one file per chapter
//!
//! Each `stageN.rs` holds the [`Kind`]s of that chapter's numeric questions: how to draw new
//! arguments for the question's engine call, and which derived numbers its explanation shows.
//! This file holds what the chapters share: reading and writing `check.args`, the models the
//! book names, and the wording of numbers ("three", "third", "49th").
//!
//! A derived number that is itself an engine result (the chunk a step computes, the victim a
//! preemption picks) is asked of the engine with [`engine`], the same call the answer comes
//! from, with another `output`: the explanation never recomputes what the engine decides.

use crate::engine_calls;
use crate::template::{Args, Kind, Rng, Values};

pub mod stage1;
pub mod stage2;
pub mod stage3;
pub mod stage4;
pub mod stage5;
pub mod stage6;
pub mod stage7;

/// Every chapter's kinds, in chapter order.
pub const BY_CHAPTER: &[&[Kind]] = &[
    stage1::KINDS,
    stage2::KINDS,
    stage3::KINDS,
    stage4::KINDS,
    stage5::KINDS,
    stage6::KINDS,
    stage7::KINDS,
];

/// The engine's value for `function` with `args` ([`crate::template::engine_value`], cached).
pub(crate) fn engine(function: &str, args: &Args) -> Result<f64, String> {
    crate::template::engine_value(function, args)
}

/// The engine's value for `args` with `key` set to `value`: the same question, another output.
pub(crate) fn engine_with(
    function: &str,
    args: &Args,
    changes: &[(&str, toml::Value)],
) -> Result<f64, String> {
    let mut a = args.clone();
    for (k, v) in changes {
        a.insert(k.to_string(), v.clone());
    }
    engine(function, &a)
}

/// A string argument value.
pub(crate) fn s(v: &str) -> toml::Value {
    toml::Value::String(v.into())
}

/// An integer argument value.
pub(crate) fn i(v: u64) -> toml::Value {
    toml::Value::Integer(v as i64)
}

pub(crate) fn int(args: &Args, key: &str) -> Result<u64, String> {
    args.get(key)
        .and_then(|v| v.as_integer())
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| format!("argument `{key}` must be a non-negative integer"))
}

pub(crate) fn ints(args: &Args, key: &str) -> Result<Vec<u64>, String> {
    let list = args
        .get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(|| format!("argument `{key}` must be a list"))?;
    list.iter()
        .map(|v| {
            v.as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| format!("argument `{key}` must hold non-negative integers"))
        })
        .collect()
}

pub(crate) fn text<'a>(args: &'a Args, key: &str) -> Result<&'a str, String> {
    engine_calls::text(args, key)
}

pub(crate) fn set(args: &mut Args, key: &str, v: u64) {
    args.insert(key.into(), i(v));
}

pub(crate) fn set_list(args: &mut Args, key: &str, v: &[u64]) {
    let list = v.iter().map(|&x| i(x)).collect();
    args.insert(key.into(), toml::Value::Array(list));
}

pub(crate) fn values(pairs: &[(&str, String)]) -> Values {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// `len` distinct physical block ids below 64, in random order: a scattered block table.
pub(crate) fn scattered_blocks(rng: &mut Rng, len: usize) -> Vec<u64> {
    let mut pool: Vec<u64> = (0..64).collect();
    rng.shuffle(&mut pool);
    pool.truncate(len);
    pool
}

/// "128", "128 and 256", "128, 256 and 512".
pub(crate) fn spoken_list<T: ToString>(items: &[T]) -> String {
    let words: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// "1st", "2nd", "49th", "112th".
pub(crate) fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// "two" … "twelve"; larger numbers as digits.
pub(crate) fn number_word(n: u64) -> String {
    const WORDS: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    WORDS
        .get(n as usize)
        .map_or_else(|| n.to_string(), |w| w.to_string())
}

/// "first" … "tenth"; larger numbers as "11th".
pub(crate) fn ordinal_word(n: u64) -> String {
    const WORDS: [&str; 11] = [
        "zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
        "ninth", "tenth",
    ];
    WORDS
        .get(n as usize)
        .map_or_else(|| ordinal(n), |w| w.to_string())
}

/// "2⁸" … "2³²": a power of two as the book writes it.
pub(crate) fn power_of_two(exp: u32) -> String {
    const DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let sup: String = exp
        .to_string()
        .chars()
        .map(|c| DIGITS[c.to_digit(10).unwrap_or(0) as usize])
        .collect();
    format!("2{sup}")
}

/// The models the quizzes draw from, with the names the book gives them.
pub(crate) const MODELS: &[(&str, &str)] = &[
    ("llama-2-7b", "Llama-2-7B"),
    ("llama-3.2-1b", "Llama-3.2-1B"),
    ("smollm2-135m", "SmolLM2-135M"),
];

/// A model's config by name ([`engine_calls::model_config`]), read once per process.
pub(crate) fn model_config(name: &str) -> Result<engine::config::ModelConfig, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashMap<String, engine::config::ModelConfig>>> = Mutex::new(None);
    let cached = || SEEN.lock().ok()?.as_ref()?.get(name).cloned();
    if let Some(c) = cached() {
        return Ok(c);
    }
    let c = engine_calls::model_config(name)?;
    if let Ok(mut seen) = SEEN.lock() {
        seen.get_or_insert_with(HashMap::new)
            .insert(name.to_string(), c.clone());
    }
    Ok(c)
}

/// The book's name of a model id (`llama-2-7b` → `Llama-2-7B`); unknown ids as they are.
pub(crate) fn model_name(id: &str) -> String {
    const MORE: &[(&str, &str)] = &[
        ("llama-2-70b", "Llama-2-70B"),
        ("llama-3-70b", "Llama-3-70B"),
        ("llama-3-8b", "Llama-3-8B"),
        ("tiny", "the tiny model"),
    ];
    MODELS
        .iter()
        .chain(MORE)
        .find(|(m, _)| *m == id)
        .map_or(id, |(_, name)| name)
        .to_string()
}

/// `args` with `model` set to one of `ids`.
pub(crate) fn with_model(rng: &mut Rng, book: &Args, ids: &[&str]) -> Args {
    let mut args = book.clone();
    args.insert("model".into(), s(rng.pick(ids)));
    args
}

/// `args` with `model` set to one of [`MODELS`].
pub(crate) fn with_any_model(rng: &mut Rng, book: &Args) -> Args {
    let ids: Vec<&str> = MODELS.iter().map(|(id, _)| *id).collect();
    with_model(rng, book, &ids)
}
/// A number as the book writes it: integers exactly, others with up to `max_decimals`
/// digits and no trailing zeros.
pub(crate) fn short(v: f64, max_decimals: usize) -> String {
    if v == v.trunc() {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.max_decimals$}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
