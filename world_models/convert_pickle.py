"""`python -m world_models.convert_pickle IN.pkl OUT_DIR`: the course's dataset as episode files.

The course's pickle is loaded with a restricted unpickler (see world_models.data.convert),
so converting a file from elsewhere cannot run code hidden in it.
"""

import argparse

from world_models.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m world_models.convert_pickle",
        description="Convert the course's pickled (state, action, reward) episodes into "
        "a directory of episode_*.npz files usable as data.dir.",
    )
    parser.add_argument("in_path", metavar="IN.pkl", help="the course's pickle")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="new or empty output directory")
    args = parser.parse_args(argv)

    from world_models.data.convert import convert_pickle

    count = convert_pickle(args.in_path, args.out_dir)
    print(f"wrote {count} episodes to {args.out_dir}")


if __name__ == "__main__":
    main()
