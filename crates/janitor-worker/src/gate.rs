//! When the worker asks the queue for jobs.
//!
//! apalis 1.0 runs a fetch (a Lua script in Redis) whenever the worker's task is polled
//! with its buffer empty, whatever woke the task: a job's progress, a batch's reply, the
//! heartbeat. Its `PollWith` consults a poll strategy but fetches whatever the strategy
//! answers. In the steady state that was about 30 fetches a second where the pace asks
//! for 8, most of them empty (`docs/performance-log.md`, 2026-12-07).
//!
//! [`Gated`] stands where `PollWith` stood and lets a poll reach the library only when:
//! - [`Paced`] says so: a push woke the worker (this process's, or one that the worker's
//!   `tend` check found waiting), or the fallback interval passed without one;
//! - the library just yielded a task (its buffer may hold more, and once that is dry it
//!   fetches again at once, which is what keeps jobs flowing under load);
//! - the library itself asked to be polled: its fetch in flight has an answer. The library
//!   is polled with a waker of ours that records this before waking the task.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use apalis_core::{
    backend::{Backend, BackendConfig, WireFormatBackend},
    worker::context::WorkerContext,
};
use futures::task::AtomicWaker;

/// A backend whose fetches happen only when [`Paced`] asks or a fetch is under way.
pub(crate) struct Gated<B> {
    backend: B,
    pace: Paced,
    /// The library's last answer was a task: poll it again without asking the pace.
    flowing: bool,
    called: Arc<Called>,
    waker: Waker,
}

/// The waker the library is polled with: records that the library asked for a poll.
struct Called {
    set: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Called {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<B> Gated<B> {
    pub(crate) fn new(backend: B, pacer: janitor_queue::Pacer) -> Self {
        let called = Arc::new(Called {
            set: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        Self {
            backend,
            pace: Paced::new(pacer),
            flowing: false,
            waker: Waker::from(called.clone()),
            called,
        }
    }
}

impl<B: Backend> Backend for Gated<B> {
    type Task = B::Task;
    type Error = B::Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.backend.poll_ready(cx, worker)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.called.task.register(cx.waker());
        let called = self.called.set.swap(false, Ordering::AcqRel);
        if !(self.flowing || called) && self.pace.poll(cx).is_pending() {
            return Poll::Pending;
        }
        let mut library = Context::from_waker(&self.waker);
        let next = self.backend.poll_next(&mut library, worker);
        // Pending: a fetch is in flight (its answer wakes `called`) or came back empty.
        self.flowing = next.is_ready();
        next
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.backend.poll_close(cx, worker)
    }
}

impl<B: BackendConfig> BackendConfig for Gated<B> {
    type Id = B::Id;
    type Args = B::Args;
    type Kind = B::Kind;
    type Config = B::Config;
    type Layer = B::Layer;

    fn config(&self) -> &Self::Config {
        self.backend.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        self.backend.middleware(worker)
    }
}

impl<B: WireFormatBackend> WireFormatBackend for Gated<B> {
    type Compact = B::Compact;
    type Codec = B::Codec;

    fn codec(&self) -> &Self::Codec {
        self.backend.codec()
    }
}

/// The pace of fetches: one at once when woken (this process pushed jobs, or `tend`'s
/// cheap check found some waiting), else one per [`janitor_queue::Pacer::fallback`].
struct Paced {
    pacer: janitor_queue::Pacer,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Paced {
    fn new(pacer: janitor_queue::Pacer) -> Self {
        Self { pacer, delay: None }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pacer.take_wake(cx.waker()) {
            self.delay = None;
            return Poll::Ready(());
        }
        let pacer = &self.pacer;
        let delay = self
            .delay
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(pacer.fallback())));
        let ready = delay.as_mut().poll(cx);
        if ready.is_ready() {
            self.delay = None;
        }
        ready
    }
}
