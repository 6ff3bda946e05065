//! Dynamic batching: inputs from requests that arrive within
//! `max_queue_delay` of the first one are run together, up to
//! `max_batch_size` inputs, and each caller gets its own outputs back.
//! Batches run one at a time: the backend owns the parallelism inside one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, Output};

/// When to close a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most inputs in one batch (a single larger request runs alone).
    pub max_batch_size: usize,
    /// How long the first input waits for company.
    pub max_queue_delay: Duration,
}

type Reply = oneshot::Sender<Result<Vec<Output>, BackendError>>;

struct Job {
    inputs: Vec<String>,
    reply: Reply,
}

/// Hands inputs to the batching loop.
#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the batching loop on the current runtime.
    pub fn start(backend: Arc<dyn Backend>, settings: BatchSettings) -> Self {
        let (jobs, rx) = mpsc::channel(1024);
        tokio::spawn(run(backend, settings, rx));
        Self { jobs }
    }

    /// Runs `inputs` in the next batch with room, and returns their outputs.
    pub async fn infer(&self, inputs: Vec<String>) -> Result<Vec<Output>, BackendError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { inputs, reply })
            .await
            .map_err(|_| BackendError::Failed("the batching loop has stopped".into()))?;
        answer
            .await
            .map_err(|_| BackendError::Failed("the batching loop dropped the request".into()))?
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
    let result = match crate::telemetry::infer(backend, &inputs).await {
        Ok(outputs) if outputs.len() == size => Ok(outputs),
        Ok(outputs) => Err(BackendError::Failed(format!(
            "{} outputs for {size} inputs",
            outputs.len()
        ))),
        Err(error) => Err(error),
    };
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

        async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, BackendError> {
            self.batches.lock().await.push(inputs.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(inputs
                .iter()
                .map(|s| serde_json::value::to_raw_value(s).unwrap())
                .collect())
        }
    }

    /// The outputs as JSON text, to compare.
    fn texts(outputs: &[Output]) -> Vec<&str> {
        outputs.iter().map(|o| o.get()).collect()
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
                tokio::spawn(async move { b.infer(vec![format!("a{i}"), format!("b{i}")]).await })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            let outputs = call.await.unwrap().unwrap();
            assert_eq!(texts(&outputs), [format!("\"a{i}\""), format!("\"b{i}\"")]);
        }
        assert_eq!(*recorder.batches.lock().await, vec![4, 4, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_input_waits_only_the_queue_delay() {
        let (recorder, batcher) = batcher(32);
        let start = Instant::now();
        let outputs = batcher.infer(vec!["x".into()]).await.unwrap();
        assert_eq!(texts(&outputs), ["\"x\""]);
        // 5 ms of waiting for company, then 10 ms of inference.
        assert_eq!(start.elapsed(), Duration::from_millis(15));
        assert_eq!(*recorder.batches.lock().await, vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn inputs_after_the_delay_go_to_the_next_batch_and_big_requests_run_alone() {
        let (recorder, batcher) = batcher(4);
        let big = batcher
            .infer((0..6).map(|i| i.to_string()).collect())
            .await
            .unwrap();
        assert_eq!(big.len(), 6);
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.infer(vec!["1".into()]).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let second = batcher.infer(vec!["2".into()]).await.unwrap();
        assert_eq!(texts(&first.await.unwrap().unwrap()), ["\"1\""]);
        assert_eq!(texts(&second), ["\"2\""]);
        assert_eq!(*recorder.batches.lock().await, vec![6, 1, 1]);
    }
}
