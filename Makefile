# PruneFL-Edge: `make demo` runs the main job, `make test` the whole test suite (what CI runs).
VENV   ?= .venv
PY     := $(VENV)/bin/python
JOBS   ?= 2
BUILD  ?= build
CTEST  := ctest --output-on-failure --timeout 900

.PHONY: help deps pi-build-deps test test-c test-valgrind test-py test-py-asan test-portable demo pi-wheels dists bench clean
.DEFAULT_GOAL := help

help:
	@echo "make demo   - a PruneFL federation over MQTT on this machine (embedded broker, 4 edge processes, MNIST subset)"
	@echo "make test   - the whole test suite: C (native, ASan+UBSan, valgrind, aarch64 and armhf under qemu, portable)"
	@echo "              and Python (native, and end to end on the ASan+UBSan and portable builds)"
	@echo "make pi-wheels - the prunefl-edge wheels for 64- and 32-bit Raspberry Pi OS, cross-built in dist/, and"
	@echo "              dist/aarch64/deps (offline dependency set); needs only CMake and the cross compilers"
	@echo "make dists  - this machine's prunefl-edge wheel and the prunefl-coordinator wheel, in dist/"
	@echo "make bench  - bench/bench_core.py: the C core against PyTorch CPU"

deps:
	bash .ci/setup.sh

# The C core four ways: natively (with BLAS), under AddressSanitizer+UBSan, and cross-built for 64-bit and
# 32-bit Raspberry Pi OS, whose ctest runs under qemu (the NEON kernels are tested there).
test-c:
	cmake -S . -B $(BUILD)/native -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD)/native -j$(JOBS)
	$(CTEST) --test-dir $(BUILD)/native
	cmake -S . -B $(BUILD)/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPF_SANITIZE=ON -DPF_USE_BLAS=OFF >/dev/null
	cmake --build $(BUILD)/asan -j$(JOBS)
	$(CTEST) --test-dir $(BUILD)/asan
	cmake -S . -B $(BUILD)/aarch64 -DCMAKE_TOOLCHAIN_FILE=firmware_scripts/toolchains/aarch64-linux-gnu.cmake \
	      -DPF_USE_BLAS=OFF >/dev/null
	cmake --build $(BUILD)/aarch64 -j$(JOBS)
	$(CTEST) --test-dir $(BUILD)/aarch64
	cmake -S . -B $(BUILD)/armhf -DCMAKE_TOOLCHAIN_FILE=firmware_scripts/toolchains/armhf-linux-gnueabihf.cmake \
	      -DPF_USE_BLAS=OFF >/dev/null
	cmake --build $(BUILD)/armhf -j$(JOBS)
	$(CTEST) --test-dir $(BUILD)/armhf

# The C tests under valgrind memcheck (0 errors, no definite leaks; any defect fails): a portable build without BLAS,
# because valgrind does not know every instruction -march=native may emit, and OpenBLAS' own threads are not ours.
test-valgrind:
	cmake -S . -B $(BUILD)/valgrind -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPF_NATIVE=OFF -DPF_USE_BLAS=OFF >/dev/null
	cmake --build $(BUILD)/valgrind -j$(JOBS)
	cd $(BUILD)/valgrind && ctest --output-on-failure --timeout 1800 -T memcheck \
	    --overwrite MemoryCheckCommand=$$(command -v valgrind) \
	    --overwrite "MemoryCheckCommandOptions=--error-exitcode=99 --leak-check=full --track-origins=yes"

# Python: lint, then pytest against the library of the native build above (the pip-installed package is
# checked by tests/test_build.py).
test-py:
	$(VENV)/bin/ruff check .
	PRUNEFL_EDGE_LIB=$(CURDIR)/$(BUILD)/native/libprunefl.so PRUNEFL_EDGE_VENV=$(CURDIR)/$(VENV) \
	    $(PY) -m pytest -q -p no:cacheprovider tests

# The Python end-to-end tests again, on the ASan+UBSan build of the core (the sanitizer runtimes preloaded into
# Python; leak checking off because CPython itself keeps memory until exit): training, ONNX, and whole federations
# over Mosquitto whose edge processes inherit the preload and the library.
SAN_RT := $(shell gcc -print-file-name=libasan.so):$(shell gcc -print-file-name=libubsan.so)
test-py-asan:
	LD_PRELOAD=$(SAN_RT) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1 \
	    PRUNEFL_EDGE_LIB=$(CURDIR)/$(BUILD)/asan/libprunefl.so \
	    $(PY) -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_train_digits.py \
	    tests/test_onnx.py tests/test_mqtt_federation.py \
	    -k "not torch_exported and (not mqtt_federation or federation_over_mosquitto or killed_and_resumed)"

# The portable build (PF_NATIVE=OFF): what `pip install . -C cmake.define.PF_NATIVE=OFF` ships to other CPUs of the
# same architecture, and what an x86-64 without AVX gets from a native build. Last, so that a failure here does not
# hide the results of the others.
test-portable:
	cmake -S . -B $(BUILD)/portable -DCMAKE_BUILD_TYPE=Release -DPF_NATIVE=OFF >/dev/null
	cmake --build $(BUILD)/portable -j$(JOBS)
	$(CTEST) --test-dir $(BUILD)/portable
	PRUNEFL_EDGE_LIB=$(CURDIR)/$(BUILD)/portable/libprunefl.so \
	    $(PY) -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_engine_torch.py tests/test_train_digits.py

test: deps test-c test-valgrind test-py test-py-asan test-portable

demo: deps  # starts afresh each time (prunefl-coord itself refuses to overwrite an interrupted run)
	rm -rf runs/demo
	$(VENV)/bin/prunefl-coord --broker embedded --spawn-edges 4 --min-clients 4 --clients-per-round 4 \
	    --dataset mnist5k --model conv2 --method prunefl --rounds 40 --reconfig-interval 10 --eval-every 5 \
	    --out runs/demo

# The wheels a Raspberry Pi installs, cross-built here (dist/aarch64, dist/armhf), with the aarch64 wheel's offline
# dependency set (dist/aarch64/deps, downloaded from the package index). Needs the cross compilers and CMake only
# (pi-build-deps), not the test tool chain (PyTorch, valgrind, Mosquitto, qemu).
pi-wheels: pi-build-deps
	firmware_scripts/cross_build.sh --arch all --deps --python $(PY)

pi-build-deps:
	bash .ci/setup.sh --build-only

dists: deps  # the two distributions for this machine: the device (prunefl-edge) and the server (prunefl-coordinator)
	for kind in edge coordinator; do \
	    packaging/stage.sh $$kind $(BUILD)/stage-$$kind >/dev/null && \
	    $(PY) -m pip wheel --quiet --no-deps --wheel-dir dist $(BUILD)/stage-$$kind -C build-dir=$(BUILD)/wheel-$$kind \
	    || exit 1; \
	done
	ls dist/*.whl

bench: deps
	$(PY) bench/bench_core.py --json runs/bench_core.json

clean:
	rm -rf $(BUILD) runs
