# Shared argument handling of train.sh and eval.sh (sourced, POSIX sh).
# Usage: parse_launch_args SCRIPT_NAME EXTRA_USAGE "$@"  (CONFIG NUM_GPUS OUTPUT_DIR [ARGS ...]).
# Sets: config, gpus, output, launcher_flags (--num-machines/--machine-rank/--dist-url/--resume
# with their values), suite (the value of --suite, when the caller sets accepts_suite=1; else
# --suite is an unknown option) and leaves KEY VALUE overrides in the positional parameters via
# `eval set -- $opts`.

usage() {
    cat >&2 <<USAGE
Usage: sh scripts/$1 CONFIG NUM_GPUS OUTPUT_DIR [KEY VALUE ...] [--num-machines N]
           [--machine-rank R] [--dist-url URL]$2
  CONFIG      a YAML file, e.g. configs/vitb_384.yaml
  NUM_GPUS    processes per machine (GPUs; on a CPU-only machine, CPU processes with gloo)
  OUTPUT_DIR  where logs, checkpoints and results go
  KEY VALUE   config overrides, e.g. SOLVER.IMS_PER_BATCH 4 MODEL.WEIGHTS path/to/model.pth
USAGE
}

quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

parse_launch_args() {
    script=$1
    extra_usage=$2
    shift 2
    if [ $# -lt 3 ]; then
        echo "error: $script needs CONFIG, NUM_GPUS and OUTPUT_DIR." >&2
        usage "$script" "$extra_usage"
        exit 2
    fi
    config=$1
    gpus=$2
    output=$3
    shift 3
    if [ ! -f "$config" ]; then
        echo "error: config file '$config' not found." >&2
        usage "$script" "$extra_usage"
        exit 2
    fi
    case $gpus in
        ''|*[!0-9]*|0)
            echo "error: NUM_GPUS must be a positive integer, got '$gpus'." >&2
            usage "$script" "$extra_usage"
            exit 2 ;;
    esac
    launcher_flags=""
    opts=""
    suite=""
    while [ $# -gt 0 ]; do
        if [ "$1" = --suite ] && [ "${accepts_suite:-0}" = 1 ]; then
            if [ $# -lt 2 ]; then
                echo "error: --suite needs a value (paper, ovrsisbench or dataset names separated by commas)." >&2
                exit 2
            fi
            suite=$2
            shift 2
            continue
        fi
        case $1 in
            --num-machines|--machine-rank|--dist-url)
                if [ $# -lt 2 ]; then
                    echo "error: $1 needs a value." >&2
                    exit 2
                fi
                launcher_flags="$launcher_flags $1 $(quote "$2")"
                shift 2 ;;
            --resume)
                launcher_flags="$launcher_flags --resume"
                shift ;;
            --*)
                echo "error: unknown option '$1'." >&2
                usage "$script" "$extra_usage"
                exit 2 ;;
            *)
                if [ $# -lt 2 ]; then
                    echo "error: config override '$1' has no value (overrides come as KEY VALUE pairs)." >&2
                    exit 2
                fi
                opts="$opts $(quote "$1") $(quote "$2")"
                shift 2 ;;
        esac
    done
}
