"""The Prometheus meter against an exporter on a loopback port whose counter follows a known power."""

import http.server
import threading
import time

import pytest

from pytest_llm_energy.meters import MeterUnavailable, PrometheusMeter
from pytest_llm_energy.meters.prometheus import parse_series

DCGM = """# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).
# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="GPU-aaa",device="nvidia0",Hostname="node1"} 1234567
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="1",UUID="GPU-bbb",device="nvidia1",Hostname="node1"} 7654321
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-aaa"} 250.5
"""


def test_every_series_of_the_metric_is_a_device():
    series = parse_series(DCGM, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    assert series == {"gpu=0,UUID=GPU-aaa,Hostname=node1": 1234567.0, "gpu=1,UUID=GPU-bbb,Hostname=node1": 7654321.0}
    node = 'node_rapl_package_joules_total{index="0",path="/sys/class/powercap/intel-rapl:0"} 1.5e+06\n'
    assert parse_series(node, "node_rapl_package_joules_total") == {"index=0": 1.5e6}


class Exporter:
    """A counter drawing ``watts`` (mJ, DCGM's unit) that the exporter refreshes every ``period`` s."""

    def __init__(self, watts, period):
        self.watts, self.period, self.t0 = watts, period, time.monotonic()
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                now = time.monotonic() - exporter.t0
                updated = now - now % exporter.period  # the value as of the last refresh
                body = (f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="0",UUID="GPU-x"}} '
                        f"{exporter.watts * updated * 1000:.0f}\n").encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def truth(self, a, b):
        return self.watts * (b - a)


@pytest.fixture
def exporter():
    exporter = Exporter(watts=50.0, period=0.2)
    yield exporter
    exporter.server.shutdown()


def test_a_window_of_a_remote_counter_is_right_within_its_bound(exporter):
    meter = PrometheusMeter(exporter.url, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", period_s=0.2,
                            clock=lambda: time.monotonic() - exporter.t0)
    meter.start()
    try:
        time.sleep(1.0)  # the sampler sees the counter move and fits its period
        start = meter.mark()
        time.sleep(1.3)
        end = meter.mark()
        window = meter.window(start, end)
    finally:
        meter.close()
    truth = exporter.truth(start.t, end.t)
    assert abs(window.joules - truth) <= window.bound_j
    assert abs(window.joules - truth) / truth < 0.10
    assert meter.update_period() == pytest.approx(0.2, rel=0.1)
    assert list(window.devices) == ["gpu=0,UUID=GPU-x"]


def test_a_missing_metric_or_endpoint_says_what_is_wrong(exporter):
    with pytest.raises(MeterUnavailable, match="exposes no series of kepler_node_package_joules_total"):
        PrometheusMeter(exporter.url, "kepler_node_package_joules_total")
    with pytest.raises(MeterUnavailable, match="cannot be read"):
        PrometheusMeter("http://127.0.0.1:9/metrics", "x")
    with pytest.raises(MeterUnavailable, match="needs --energy-prometheus-url"):
        PrometheusMeter("", "x")
