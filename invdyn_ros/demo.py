"""`make demo`: the main job, end to end, bounded in time, cleaning up after itself.

Offline part (this issue's scope; the ROS node graph joins it later):

1. simulate the KUKA LWR 4+ pushing flasks of 200, 300 and 400 ml and record /joint_states as a
   rosbag2, exactly as recording a real arm would;
2. read the bag back and train the stateful LSTM on joints 1-5;
3. run the model step by step, state carried, on a fresh run with a payload it did not see
   in that order, beside the naive baseline (previous measured torque);
4. print the table and save ``results.json`` and PNG figures of predicted vs measured torque.
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import time

import numpy as np

LWR_JOINTS_1_TO_5 = ('lwr_a1_joint', 'lwr_a2_joint', 'lwr_e1_joint', 'lwr_a3_joint',
                     'lwr_a4_joint')
#: Demo sizes: (seconds per training run, epochs, test seconds).
FULL = (60.0, 30, 20.0)
QUICK = (8.0, 4, 4.0)
PAYLOADS_ML = (200.0, 300.0, 400.0)


def run_demo(out: Path, quick: bool = False) -> int:
    """Run the demo into folder ``out`` (replaced if it exists); returns an exit status."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from invdyn_ros.core.accel import AccelConfig
    from invdyn_ros.core.bagio import write_joint_state_bag
    from invdyn_ros.core.checkpoint import save_checkpoint
    from invdyn_ros.core.datasets import load_trajectories
    from invdyn_ros.core.evaluate import predict_trajectories
    from invdyn_ros.core.lstm import LstmConfig
    from invdyn_ros.core.lwr_sim import simulate
    from invdyn_ros.core.training import TrainConfig, mse_scores, train_lstm, training_meta

    t0 = time.perf_counter()
    seconds, epochs, test_seconds = QUICK if quick else FULL
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    print(f'[1/4] simulating the LWR 4+: {len(PAYLOADS_ML)} runs x {seconds:g} s at 1 kHz, '
          f'payloads {PAYLOADS_ML} ml')
    runs = [simulate(seconds=seconds, payload_ml=ml, seed=10 + i)
            for i, ml in enumerate(PAYLOADS_ML)]
    bag = write_joint_state_bag(out / 'sim_bag', runs, storage='mcap')
    print(f'      wrote {bag}')

    print('[2/4] reading the bag back and training the LSTM on joints 1-5')
    trajs = load_trajectories([bag], LWR_JOINTS_1_TO_5)
    accel = AccelConfig()
    mcfg = LstmConfig(joint_names=LWR_JOINTS_1_TO_5, rate_hz=1000.0, hidden_size=32)
    tcfg = TrainConfig(epochs=epochs, batch=16, window=64, segment=1024, lr=0.05)
    result = train_lstm(trajs, mcfg, tcfg, accel)
    model_path = save_checkpoint(out / 'lwr_lstm.npz', result.model,
                                 training_meta(result, tcfg, accel, [str(bag)]))
    print(f'      {result.train_samples} samples, {len(result.history)} epochs in '
          f'{result.wall_s:.1f} s -> {model_path}')

    print('[3/4] predicting step by step on a new 300 ml run')
    test = simulate(seconds=test_seconds, payload_ml=300.0, seed=99).select(LWR_JOINTS_1_TO_5)
    pred, = predict_trajectories(result.model, accel, [test])
    naive = np.vstack((test.tau[:1], test.tau[:-1]))       # previous measured torque
    lstm_s = mse_scores(test.tau, pred)
    naive_s = mse_scores(test.tau, naive)

    print('[4/4] results')
    print(f'  {"joint":<14}{"LSTM MSE":>12}{"LSTM nMSE":>11}{"naive MSE":>12}')
    for j, name in enumerate(LWR_JOINTS_1_TO_5):
        print(f'  {name:<14}{lstm_s["mse_per_joint"][j]:>12.4g}'
              f'{lstm_s["nmse_per_joint"][j]:>11.4f}{naive_s["mse_per_joint"][j]:>12.4g}')
    print(f'  {"overall":<14}{lstm_s["mse"]:>12.4g}{lstm_s["nmse"]:>11.4f}'
          f'{naive_s["mse"]:>12.4g}')

    t = test.times()
    fig, axes = plt.subplots(len(LWR_JOINTS_1_TO_5), 1, figsize=(10, 11), sharex=True)
    for j, ax in enumerate(axes):
        ax.plot(t, test.tau[:, j], 'k', lw=1.0, label='measured')
        ax.plot(t, pred[:, j], 'C1', lw=1.0, label='LSTM (step by step)')
        ax.set_ylabel(f'{LWR_JOINTS_1_TO_5[j]}\n[Nm]')
    axes[0].legend(loc='upper right')
    axes[-1].set_xlabel('time [s]')
    fig.suptitle('Simulated KUKA LWR 4+, 300 ml flask: predicted vs measured joint torque')
    fig.tight_layout()
    fig.savefig(out / 'torque_prediction.png', dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ep = [h['epoch'] for h in result.history]
    ax.semilogy(ep, [h['train_loss'] for h in result.history], label='train (normalised MSE)')
    if 'val_nmse' in result.history[0]:
        ax.semilogy(ep, [h['val_nmse'] for h in result.history], label='validation nMSE')
    ax.set_xlabel('epoch')
    ax.set_ylabel('normalised MSE [-]')
    ax.set_title('LSTM training on the simulated LWR')
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / 'training.png', dpi=100)
    plt.close(fig)

    results = {'quick': quick, 'wall_s': round(time.perf_counter() - t0, 2),
               'train_samples': result.train_samples, 'epochs': len(result.history),
               'lstm': lstm_s, 'naive': naive_s, 'joint_names': list(LWR_JOINTS_1_TO_5),
               'model': str(model_path), 'bag': str(bag)}
    (out / 'results.json').write_text(json.dumps(results, indent=2))
    print(f'  figures and results in {out}/ ({results["wall_s"]:.0f} s)')
    return 0
