//! Scatter by shard, gather in order: the one way the Worker asks many shards about many
//! items (creates, reports, hand-offs, the queue's edge jobs, a listing's whole jobs). Each
//! shard gets one call with its items, all shards at once, and every item gets its own
//! answer back in the order it was given.

use std::collections::BTreeMap;
use std::future::Future;

use edgejobs_core::{ApiError, ErrorCode};
use futures_util::future::join_all;

/// Calls `call` once per shard with that shard's items (in their order), all shards at once,
/// and answers every item in the order given. An item that is already an error (refused
/// before it reached a shard) keeps its error; a shard that failed answers each of its items
/// with its error; a shard that answered another number of items than it was sent answers
/// each with `unavailable`.
pub async fn by_shard<T, A, F, Fut>(items: Vec<Result<(u16, T), ApiError>>, call: F) -> Vec<Result<A, ApiError>>
where
    F: Fn(u16, Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<A>, ApiError>>,
{
    let mut out: Vec<Option<Result<A, ApiError>>> = Vec::with_capacity(items.len());
    let mut groups: BTreeMap<u16, (Vec<usize>, Vec<T>)> = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Ok((shard, t)) => {
                let group = groups.entry(shard).or_default();
                group.0.push(i);
                group.1.push(t);
                out.push(None);
            }
            Err(e) => out.push(Some(Err(e))),
        }
    }
    let calls = groups.into_iter().map(|(shard, (idx, items))| {
        let answer = call(shard, items);
        async move { (idx, answer.await) }
    });
    gather(out, join_all(calls).await)
}

/// The positions of one shard's items, and its answers or its failure.
type ShardAnswers<A> = (Vec<usize>, Result<Vec<A>, ApiError>);

/// Puts each shard's answers at its items' positions (see [`by_shard`]).
fn gather<A>(mut out: Vec<Option<Result<A, ApiError>>>, shards: Vec<ShardAnswers<A>>) -> Vec<Result<A, ApiError>> {
    for (idx, answer) in shards {
        match answer {
            Ok(answers) if answers.len() == idx.len() => {
                for (i, a) in idx.into_iter().zip(answers) {
                    out[i] = Some(Ok(a));
                }
            }
            Ok(_) => {
                for i in idx {
                    out[i] = Some(Err(ApiError::new(ErrorCode::Unavailable, "malformed shard answer")));
                }
            }
            Err(e) => {
                for i in idx {
                    out[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    out.into_iter().map(|a| a.unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal, "unanswered item")))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    fn codes<A: std::fmt::Debug>(answers: &[Result<A, ApiError>]) -> Vec<String> {
        answers
            .iter()
            .map(|a| match a {
                Ok(v) => format!("{v:?}"),
                Err(e) => e.code.as_str().to_owned(),
            })
            .collect()
    }

    #[test]
    fn each_shard_is_called_once_and_answers_come_back_in_request_order() {
        let calls = std::cell::RefCell::new(Vec::new());
        let items = vec![
            Ok((1, "a")),
            Ok((0, "b")),
            Err(ApiError::new(ErrorCode::JobNotFound, "no such shard")),
            Ok((1, "c")),
            Ok((2, "d")),
            Ok((3, "e")),
        ];
        let answers = by_shard(items, |shard, items: Vec<&str>| {
            calls.borrow_mut().push((shard, items.clone()));
            async move {
                match shard {
                    2 => Err(ApiError::new(ErrorCode::Unavailable, "down")),
                    3 => Ok(Vec::new()), // one answer short
                    _ => Ok(items.iter().map(|i| format!("{shard}{i}")).collect()),
                }
            }
        })
        .now_or_never()
        .expect("ready");
        assert_eq!(codes(&answers), ["\"1a\"", "\"0b\"", "job_not_found", "\"1c\"", "unavailable", "unavailable"]);
        assert_eq!(calls.into_inner(), [(0, vec!["b"]), (1, vec!["a", "c"]), (2, vec!["d"]), (3, vec!["e"])]);
    }

    #[test]
    fn nothing_to_send_calls_no_shard() {
        let called = std::cell::Cell::new(false);
        let answers = by_shard(Vec::<Result<(u16, u8), ApiError>>::new(), |_, _| {
            called.set(true);
            std::future::ready(Ok(Vec::<u8>::new()))
        })
        .now_or_never()
        .expect("ready");
        assert!(answers.is_empty() && !called.get());
    }
}
