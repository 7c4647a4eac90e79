"""The paper's training losses, one module per equation (names as in the paper).

- :mod:`.vertex_loss` eq. (2): landmark vertex distance ``L_ver`` (G_L);
- :mod:`.lsgan` eq. (3): least-squares GAN losses of G_L and its graph discriminator D_L;
- :mod:`.reconstruction_loss` eq. (6): L1 ``L_rec`` (G_T; also one-shot fine-tuning);
- :mod:`.perceptual_loss` eq. (7): VGG16 feature loss ``L_per`` (the network only; reading ImageNet
  weights from a file is :func:`emotalk.data.loading.build_perceptual_loss`);
- :mod:`.adversarial_loss` eq. (8): the frame discriminator's GAN loss ``L_adv``.
"""
