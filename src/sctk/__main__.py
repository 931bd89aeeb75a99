from sctk.cli import main

main()
