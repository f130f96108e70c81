//! Using varphi as a library: build a VAE, draw the built-in heat-equation data and run a few
//! hundred optimisation steps of the ELBO with plain burn.
//!
//!     cargo run --release --example library_vae

use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use std::path::Path;
use varphi_data::{Batcher, DataSource, Normalization};
use varphi_losses::{ElboConfig, GaussianLikelihoodConfig, LikelihoodConfig, NoiseModel};
use varphi_models::{
    DecoderConfig, EncoderConfig, MlpDecoderConfig, MlpEncoderConfig, VaeConfig, standard_normal,
};

fn main() {
    let device = Device::flex().autodiff();
    device.seed(0);

    let source = DataSource::Heat1d {
        n: 1000,
        grid: 32,
        modes: 6,
        t: 0.005,
        kappa: [0.5, 2.0],
    };
    let data = source.load(0, Path::new(".")).expect("built-in data");
    let (train, _test) = data.split(0.1, 0);
    let train = Normalization::fit(&train).apply(&train);

    let mut vae = VaeConfig::new(
        EncoderConfig::Mlp(MlpEncoderConfig::new(32, 4).with_hidden(vec![64, 64])),
        DecoderConfig::Mlp(MlpDecoderConfig::new(4, 32).with_hidden(vec![64, 64])),
    )
    .init(&device);
    let likelihood = LikelihoodConfig::Gaussian(
        GaussianLikelihoodConfig::new()
            .with_sigma(0.1)
            .with_noise(NoiseModel::Fixed),
    )
    .init(&device);
    let elbo = ElboConfig::new().with_warmup_steps(100).init();
    let mut optim = AdamConfig::new().init();

    let batcher = Batcher::new(64, 0);
    let mut step = 0;
    for epoch in 0..20 {
        for idx in batcher.epoch(train.len(), epoch) {
            let (x, _) = train.batch(&idx, &device);
            let eps = standard_normal([1, idx.len(), 4], &device);
            let out = elbo.forward_model(&vae, &likelihood, x, None, eps, step);
            let grads = GradientsParams::from_grads(out.loss.backward(), &vae);
            vae = optim.step(2e-3, vae, grads);
            step += 1;
            if step % 100 == 0 {
                let s = out.scalars();
                println!(
                    "step {step:4}  elbo {:8.2}  log_lik {:8.2}  kl {:6.2}",
                    s.elbo, s.log_lik, s.kl
                );
            }
        }
    }
}
