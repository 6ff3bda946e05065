//! Dynamic batching: inputs from requests that arrive within
//! `max_queue_delay` of the first one are run together, up to
//! `max_batch_size` inputs, and each caller gets its own outputs back.
//! Batches run one at a time: the backend owns the parallelism inside one.
//!
//! No backend call ever takes more than `max_batch_size` inputs: a request
//! with more is cut into batch-sized pieces, run in turn, and its outputs
//! put back together in order. One padded batch of a whole large request
//! would cost memory in proportion to inputs x longest input, and a
//! client chooses both.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, Input, Output};

/// When to close a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most inputs in one batch (a larger request is cut into pieces of
    /// this size).
    pub max_batch_size: usize,
    /// How long the first input waits for company.
    pub max_queue_delay: Duration,
}

type Reply = oneshot::Sender<Result<Vec<Output>, BackendError>>;

struct Job {
    inputs: Vec<Input>,
    reply: Reply,
}

/// Hands inputs to the batching loop.
#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    max_batch_size: usize,
}

impl Batcher {
    /// Starts the batching loop on the current runtime.
    pub fn start(backend: Arc<dyn Backend>, settings: BatchSettings) -> Self {
        let (jobs, rx) = mpsc::channel(1024);
        tokio::spawn(run(backend, settings, rx));
        Self {
            jobs,
            max_batch_size: settings.max_batch_size.max(1),
        }
    }

    /// Runs `inputs` in the next batches with room, at most
    /// `max_batch_size` of them per batch, and returns their outputs in
    /// order.
    pub async fn infer(&self, inputs: Vec<Input>) -> Result<Vec<Output>, BackendError> {
        let total = inputs.len();
        // Every piece is queued before the first answer is awaited, so the
        // pieces can fill consecutive batches (and share them with other
        // callers) instead of each waiting for the previous one's result.
        let mut answers = Vec::new();
        for piece in pieces(inputs, self.max_batch_size) {
            answers.push(self.submit(piece).await?);
        }
        let mut outputs = Vec::with_capacity(total);
        for answer in answers {
            let piece = answer.await.map_err(|_| {
                BackendError::Failed("the batching loop dropped the request".into())
            })??;
            outputs.extend(piece);
        }
        Ok(outputs)
    }

    /// Queues one job of at most `max_batch_size` inputs.
    async fn submit(
        &self,
        inputs: Vec<Input>,
    ) -> Result<oneshot::Receiver<Result<Vec<Output>, BackendError>>, BackendError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { inputs, reply })
            .await
            .map_err(|_| BackendError::Failed("the batching loop has stopped".into()))?;
        Ok(answer)
    }
}

/// Runs `inputs` on `backend` without the batching loop, at most
/// `max_batch_size` per backend call, one call after another; the outputs
/// come back in order.
pub async fn infer_in_batches(
    backend: &dyn Backend,
    inputs: Vec<Input>,
    max_batch_size: usize,
) -> Result<Vec<Output>, BackendError> {
    let mut outputs = Vec::with_capacity(inputs.len());
    for piece in pieces(inputs, max_batch_size) {
        let len = piece.len();
        let answer = crate::telemetry::infer(backend, piece).await?;
        outputs.extend(one_per_input(answer, len)?);
    }
    Ok(outputs)
}

/// `inputs` cut into consecutive pieces of at most `size` (none when
/// there are no inputs: nothing to run).
fn pieces(inputs: Vec<Input>, size: usize) -> Vec<Vec<Input>> {
    let size = size.max(1);
    let mut pieces = Vec::with_capacity(inputs.len().div_ceil(size));
    let mut rest = inputs.into_iter();
    loop {
        let piece: Vec<Input> = rest.by_ref().take(size).collect();
        if piece.is_empty() {
            return pieces;
        }
        pieces.push(piece);
    }
}

/// A backend's outputs for `inputs` inputs, refused unless there is one
/// per input: a short answer would shift every later caller's outputs.
fn one_per_input(outputs: Vec<Output>, inputs: usize) -> Result<Vec<Output>, BackendError> {
    if outputs.len() == inputs {
        Ok(outputs)
    } else {
        Err(BackendError::Failed(format!(
            "{} outputs for {inputs} inputs",
            outputs.len()
        )))
    }
}

async fn run(backend: Arc<dyn Backend>, settings: BatchSettings, mut rx: mpsc::Receiver<Job>) {
    let max = settings.max_batch_size.max(1);
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let deadline = Instant::now() + settings.max_queue_delay;
        let mut size = first.inputs.len();
        let mut jobs = vec![first];
        while size < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) if size + job.inputs.len() > max => {
                    carried = Some(job);
                    break;
                }
                Ok(Some(job)) => {
                    size += job.inputs.len();
                    jobs.push(job);
                }
                Ok(None) | Err(_) => break,
            }
        }
        run_batch(backend.as_ref(), jobs, size).await;
    }
}

async fn run_batch(backend: &dyn Backend, mut jobs: Vec<Job>, size: usize) {
    let mut inputs = Vec::with_capacity(size);
    let mut lengths = Vec::with_capacity(jobs.len());
    for job in &mut jobs {
        lengths.push(job.inputs.len());
        inputs.append(&mut job.inputs);
    }
    let result = crate::telemetry::infer(backend, inputs)
        .await
        .and_then(|outputs| one_per_input(outputs, size));
    match result {
        Ok(outputs) => {
            let mut outputs = outputs.into_iter();
            for (job, len) in jobs.into_iter().zip(lengths) {
                // A caller that went away just drops its answer.
                let _ = job.reply.send(Ok(outputs.by_ref().take(len).collect()));
            }
        }
        Err(error) => {
            for job in jobs {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Mutex;

    /// Echoes inputs and records the size of every batch it ran.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl Backend for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }

        async fn infer(&self, inputs: Vec<Input>) -> Result<Vec<Output>, BackendError> {
            self.batches.lock().await.push(inputs.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(inputs.iter().map(echo).collect())
        }
    }

    /// An output that carries its input's text (as the vector's values).
    fn echo(input: &Input) -> Output {
        let Input::Text(text) = input else {
            panic!("the tests send texts");
        };
        Output::Embedding(crate::backend::Embedding {
            embedding: text.bytes().map(f32::from).collect(),
            tokens: 0,
        })
    }

    /// The texts [`echo`] carried, to compare.
    fn texts(outputs: &[Output]) -> Vec<String> {
        outputs
            .iter()
            .map(|o| match o {
                Output::Embedding(e) => e.embedding.iter().map(|&b| char::from(b as u8)).collect(),
                other => panic!("not an echo: {other:?}"),
            })
            .collect()
    }

    fn inputs<S: Into<String>>(texts: impl IntoIterator<Item = S>) -> Vec<Input> {
        texts.into_iter().map(|t| Input::Text(t.into())).collect()
    }

    fn batcher(max: usize) -> (Arc<Recorder>, Batcher) {
        let recorder = Arc::new(Recorder::default());
        let settings = BatchSettings {
            max_batch_size: max,
            max_queue_delay: Duration::from_millis(5),
        };
        (Arc::clone(&recorder), Batcher::start(recorder, settings))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_batches_and_get_their_own_outputs() {
        let (recorder, batcher) = batcher(4);
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(
                    async move { b.infer(inputs([format!("a{i}"), format!("b{i}")])).await },
                )
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            let outputs = call.await.unwrap().unwrap();
            assert_eq!(texts(&outputs), [format!("a{i}"), format!("b{i}")]);
        }
        assert_eq!(*recorder.batches.lock().await, vec![4, 4, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_input_waits_only_the_queue_delay() {
        let (recorder, batcher) = batcher(32);
        let start = Instant::now();
        let outputs = batcher.infer(inputs(["x"])).await.unwrap();
        assert_eq!(texts(&outputs), ["x"]);
        // 5 ms of waiting for company, then 10 ms of inference.
        assert_eq!(start.elapsed(), Duration::from_millis(15));
        assert_eq!(*recorder.batches.lock().await, vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn inputs_after_the_delay_go_to_the_next_batch_and_big_requests_are_cut() {
        let (recorder, batcher) = batcher(4);
        let big = batcher
            .infer(inputs((0..6).map(|i| i.to_string())))
            .await
            .unwrap();
        assert_eq!(texts(&big), ["0", "1", "2", "3", "4", "5"]);
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.infer(inputs(["1"])).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let second = batcher.infer(inputs(["2"])).await.unwrap();
        assert_eq!(texts(&first.await.unwrap().unwrap()), ["1"]);
        assert_eq!(texts(&second), ["2"]);
        assert_eq!(*recorder.batches.lock().await, vec![4, 2, 1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_loop_a_request_runs_in_pieces_in_order() {
        let recorder = Recorder::default();
        let outputs = infer_in_batches(&recorder, inputs((0..5).map(|i| i.to_string())), 2)
            .await
            .unwrap();
        assert_eq!(texts(&outputs), ["0", "1", "2", "3", "4"]);
        assert_eq!(*recorder.batches.lock().await, vec![2, 2, 1]);
        assert!(
            infer_in_batches(&recorder, Vec::new(), 2)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(recorder.batches.lock().await.len(), 3, "nothing to run");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_piece_fails_the_request() {
        /// Fails any batch holding the input "bad".
        struct FailsOnBad;

        #[async_trait::async_trait]
        impl Backend for FailsOnBad {
            fn name(&self) -> &'static str {
                "fails-on-bad"
            }

            async fn infer(&self, inputs: Vec<Input>) -> Result<Vec<Output>, BackendError> {
                if inputs.iter().any(|i| *i == Input::Text("bad".into())) {
                    return Err(BackendError::Failed("bad input".into()));
                }
                Ok(inputs.iter().map(echo).collect())
            }
        }

        let settings = BatchSettings {
            max_batch_size: 2,
            max_queue_delay: Duration::from_millis(5),
        };
        let batcher = Batcher::start(Arc::new(FailsOnBad), settings);
        let err = batcher
            .infer(inputs(["a", "b", "c", "bad", "e"]))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "inference failed: bad input");
        let fine = batcher.infer(inputs(["a"])).await.unwrap();
        assert_eq!(texts(&fine), ["a"]);
    }
}
