//! List calls as streams over every page (AIP-158).

use std::future::Future;

use futures::stream::BoxStream;

use crate::error::Result;
use crate::retry::RetryPolicy;

/// The items of every page: `call` fetches one page of `req` (each retried as a
/// unary call), `split` takes its items and next page token apart, `set_token`
/// asks for the next one. Ends after the page whose token is empty.
pub(crate) fn paged<R, P, T, F, Fut>(
    policy: RetryPolicy,
    mut req: R,
    mut call: F,
    split: fn(P) -> (Vec<T>, String),
    set_token: fn(&mut R, String),
) -> BoxStream<'static, Result<T>>
where
    R: Clone + Send + Sync + 'static,
    P: Send + 'static,
    T: Send + 'static,
    F: FnMut(R) -> Fut + Send + 'static,
    Fut: Future<Output = Result<P, tonic::Status>> + Send,
{
    Box::pin(async_stream::try_stream! {
        loop {
            let page = policy.run(|| call(req.clone())).await?;
            let (items, next) = split(page);
            for item in items {
                yield item;
            }
            if next.is_empty() {
                break;
            }
            set_token(&mut req, next);
        }
    })
}

/// Gives a mutation its request id (AIP-155) unless the caller chose one: once, before
/// the first attempt, so that every retry carries the same id.
pub(crate) fn ensure_request_id(id: &mut String) {
    if id.is_empty() {
        *id = uuid::Uuid::new_v4().to_string();
    }
}
