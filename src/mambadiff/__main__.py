from mambadiff.cli import main

main()
