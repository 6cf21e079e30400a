import os
import threading
import time

from target_userpilot.singer.ticking import lines


def test_lines_come_whole_across_reads_and_the_clock_ticks_while_input_is_silent() -> None:
    read_end, write_end = os.pipe()
    ticks: list[float] = []

    def tap() -> None:
        os.write(write_end, b'{"a": 1}\n{"b":')
        time.sleep(0.6)  # a silent tap, mid-line
        os.write(write_end, b' 2}\n\n{"c": "\xc3\xa9"}\n{"cut"')
        os.close(write_end)

    threading.Thread(target=tap).start()
    got = list(lines(read_end, lambda: ticks.append(time.monotonic()), interval=0.1))
    os.close(read_end)
    assert got == ['{"a": 1}\n', '{"b": 2}\n', "\n", '{"c": "é"}\n', '{"cut"']
    assert len(ticks) >= 3, "ticks while the tap is silent"
