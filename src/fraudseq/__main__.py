from fraudseq.cli import main

main()
